<?php
// Writes the header for ffi.preload: the generated declarations with FFI_SCOPE "gardenstate"
// and FFI_LIB naming the library to load.
//
//   php bin/preload-header.php /usr/local/lib/libgardenstate.so.1 > /etc/php/8.2/gardenstate-ffi.h
declare(strict_types=1);

require dirname(__DIR__) . '/autoload.php';

if ($argc !== 2 || $argv[1] === '' || $argv[1][0] === '-') {
    fwrite(STDERR, "usage: php bin/preload-header.php /path/to/libgardenstate.so > gardenstate-ffi.h\n");
    exit(2);
}
echo Gardenstate\Library::preloadHeader($argv[1]);
