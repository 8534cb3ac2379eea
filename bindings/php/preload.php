<?php
// opcache.preload script: compiles the binding's classes and registers libgardenstate as the
// process-wide FFI scope "gardenstate", once when php-fpm starts, so requests skip parsing
// the declarations and PHP's default ffi.enable=preload is enough. In php.ini (or -d):
//
//   opcache.enable=1
//   opcache.preload=/path/to/vendor/gardenstate/gardenstate/preload.php
//   opcache.preload_user=www-data        ; the pool's user (needed when php-fpm starts as root)
//   ffi.enable=preload
//
// The library is the file named by GARDENSTATE_LIB in php-fpm's environment, else the
// system loader's libgardenstate.so.1. A preload that fails stops php-fpm with the reason.
declare(strict_types=1);

require __DIR__ . '/autoload.php';

Gardenstate\Library::preload();
