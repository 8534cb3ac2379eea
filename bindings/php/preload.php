<?php
// opcache.preload script: compiles the binding's classes once when php-fpm starts, so that,
// with PHP's default ffi.enable=preload, they may use the FFI scope that ffi.preload loaded
// (its header made by bin/preload-header.php), and checks the library's ABI version. In
// php.ini, or php-fpm's -d flags (both are system settings, not pool settings):
//
//   ffi.enable=preload
//   ffi.preload=/etc/php/8.2/gardenstate-ffi.h
//   opcache.enable=1
//   opcache.preload=/path/to/vendor/gardenstate/gardenstate/preload.php
//   opcache.preload_user=www-data        ; needed when php-fpm starts as root
//
// A failure here stops php-fpm at start-up, with the reason in its log.
declare(strict_types=1);

require __DIR__ . '/autoload.php';

Gardenstate\Library::ffi();
