<?php
// Loads libgardenstate through PHP's FFI, once per request (or once per process, preloaded).
//
// Where the declarations come from: src/gardenstate.ffi.h, generated from
// include/gardenstate.h by bin/generate-cdef.php (the test fails if it is stale).
//
// Two ways to load, the first that applies wins:
// 1. Preloaded: ffi.preload names a header made by bin/preload-header.php (the declarations
//    with FFI_SCOPE "gardenstate" and FFI_LIB), loaded once when php-fpm starts;
//    FFI::scope() returns it at no cost. With opcache.preload=preload.php (which compiles
//    these classes) this works with PHP's default ffi.enable=preload, and saves parsing the
//    declarations on every request.
// 2. FFI::cdef() at the first use in a request (needs ffi.enable=1, or the CLI).
//
// Which library file (the first that applies wins; a named file that fails to load is an
// error, never a silent fallback), as the Lua and Python bindings do:
//   the environment variable GARDENSTATE_LIB; the path given to Library::ffi($path) (the
//   'library' option of Store and SessionHandler); the system loader's
//   libgardenstate.so.<ABI_VERSION>, then libgardenstate.so.
// Before any other symbol is declared, gds_abi_version() must equal Abi::ABI_VERSION;
// otherwise loading fails with a LibraryException and nothing else is called.
declare(strict_types=1);

namespace Gardenstate;

final class Library
{
    public const SCOPE = 'gardenstate';

    private static ?\FFI $ffi = null;

    /** The FFI instance of libgardenstate for this request (or process, when preloaded). */
    public static function ffi(?string $path = null): \FFI
    {
        if (self::$ffi !== null) {
            return self::$ffi;
        }
        if (!extension_loaded('ffi')) {
            throw new LibraryException('gardenstate: the PHP extension FFI is not loaded: install'
                . ' or enable it (PHP 7.4+ ships it as ext-ffi)');
        }
        if (ini_get('ffi.preload')) {
            try {
                $ffi = \FFI::scope(self::SCOPE);
            } catch (\FFI\Exception $e) {
                throw new LibraryException('gardenstate: ffi.preload is set but gives no FFI scope "' . self::SCOPE
                    . '" (' . $e->getMessage() . '): make its header with bin/preload-header.php, and preload'
                    . ' preload.php (opcache.preload) when ffi.enable=preload', 0, $e);
            }
            return self::$ffi = self::checked($ffi, 'the ffi.preload library');
        }
        return self::$ffi = self::cdef($path);
    }

    private static function checked(\FFI $ffi, string $what): \FFI
    {
        $abi = $ffi->gds_abi_version();
        if ($abi !== Abi::ABI_VERSION) {
            throw new LibraryException("gardenstate: $what has ABI version $abi, this binding needs "
                . Abi::ABI_VERSION . ': install the libgardenstate that matches it');
        }
        return $ffi;
    }

    /** The library file to load, in the documented order, or null for the system loader. */
    public static function path(?string $path = null): ?string
    {
        $env = getenv('GARDENSTATE_LIB');
        if (is_string($env) && $env !== '') {
            return $env;
        }
        return $path !== null && $path !== '' ? $path : null;
    }

    /** The generated declarations (src/gardenstate.ffi.h). */
    public static function declarations(): string
    {
        $file = __DIR__ . '/gardenstate.ffi.h';
        $code = @file_get_contents($file);
        if ($code === false) {
            throw new LibraryException("gardenstate: cannot read $file: reinstall the package");
        }
        return $code;
    }

    /** Loads the library with FFI::cdef: ABI check first, then every declaration. */
    private static function cdef(?string $path): \FFI
    {
        $file = self::path($path);
        $candidates = $file !== null ? [$file] : ['libgardenstate.so.' . Abi::ABI_VERSION, 'libgardenstate.so'];
        $errors = [];
        foreach ($candidates as $lib) {
            try {
                    $abi = \FFI::cdef('uint32_t gds_abi_version(void);', $lib);
            } catch (\FFI\Exception $e) {
                if (str_contains($e->getMessage(), 'ffi.enable')) {
                    throw new LibraryException('gardenstate: FFI is disabled here (' . $e->getMessage()
                        . '): set ffi.enable=1, or keep ffi.enable=preload and preload the binding'
                        . ' (ffi.preload and opcache.preload, README "php-fpm")', 0, $e);
                }
                $errors[] = "$lib: " . $e->getMessage();
                continue;
            }
            self::checked($abi, $lib);
            return \FFI::cdef(self::declarations(), $lib);
        }
        throw new LibraryException('gardenstate: cannot load libgardenstate (' . implode('; ', $errors)
            . '): set GARDENSTATE_LIB to the path of libgardenstate.so (in php-fpm: env[GARDENSTATE_LIB]'
            . ' in the pool, or the \'library\' option), or install it where the dynamic loader looks');
    }

    /** The header ffi.preload loads: the declarations, with the scope and library named. */
    public static function preloadHeader(string $lib): string
    {
        // PHP reads FFI_SCOPE and FFI_LIB only from the file's first lines.
        return '#define FFI_SCOPE "' . self::SCOPE . "\"\n#define FFI_LIB " . json_encode($lib, JSON_UNESCAPED_SLASHES)
            . "\n/* For ffi.preload: made by bindings/php/bin/preload-header.php. */\n" . self::declarations();
    }
}
