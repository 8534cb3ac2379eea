<?php
// Loads libgardenstate through PHP's FFI, once per request (or once per process, preloaded).
//
// Where the declarations come from: src/gardenstate.ffi.h, generated from
// include/gardenstate.h by bin/generate-cdef.php (the test fails if it is stale).
//
// Two ways to load, the first that applies wins:
// 1. Preloaded: preload.php (opcache.preload) has registered the FFI scope "gardenstate"
//    for the whole process; FFI::scope() returns it at no cost. This works with PHP's default
//    ffi.enable=preload, and saves parsing the declarations on every request.
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
        if (ini_get('opcache.preload') && self::scopeRegistered()) {
            return self::$ffi = \FFI::scope(self::SCOPE);
        }
        return self::$ffi = self::cdef($path);
    }

    /** Whether preload.php registered the scope in this process. */
    private static function scopeRegistered(): bool
    {
        try {
            \FFI::scope(self::SCOPE);
            return true;
        } catch (\FFI\Exception) {
            return false;
        }
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
                $abi = \FFI::cdef('uint32_t gds_abi_version(void);', $lib)->gds_abi_version();
            } catch (\FFI\Exception $e) {
                if (str_contains($e->getMessage(), 'ffi.enable')) {
                    throw new LibraryException('gardenstate: FFI is disabled here (' . $e->getMessage()
                        . '): set ffi.enable=1, or keep ffi.enable=preload and preload the binding'
                        . ' (opcache.preload=' . dirname(__DIR__) . '/preload.php); see README "php-fpm"', 0, $e);
                }
                $errors[] = "$lib: " . $e->getMessage();
                continue;
            }
            if ($abi !== Abi::ABI_VERSION) {
                throw new LibraryException("gardenstate: $lib has ABI version $abi, this binding needs "
                    . Abi::ABI_VERSION . ': install the libgardenstate that matches it');
            }
            return \FFI::cdef(self::declarations(), $lib);
        }
        throw new LibraryException('gardenstate: cannot load libgardenstate (' . implode('; ', $errors)
            . '): set GARDENSTATE_LIB to the path of libgardenstate.so (in php-fpm: env[GARDENSTATE_LIB]'
            . ' in the pool, or the \'library\' option), or install it where the dynamic loader looks');
    }

    /** For preload.php: loads the library and registers it as the process-wide FFI scope. */
    public static function preload(?string $path = null): void
    {
        $file = self::path($path) ?? 'libgardenstate.so.' . Abi::ABI_VERSION;
        $abi = \FFI::cdef('uint32_t gds_abi_version(void);', $file)->gds_abi_version();
        if ($abi !== Abi::ABI_VERSION) {
            throw new LibraryException("gardenstate: $file has ABI version $abi, this binding needs " . Abi::ABI_VERSION);
        }
        // FFI::load takes a file whose FFI_SCOPE and FFI_LIB defines name the scope and
        // library; write one beside the system's temporary files for this process only.
        $header = '#define FFI_SCOPE "' . self::SCOPE . "\"\n#define FFI_LIB " . json_encode($file) . "\n"
            . self::declarations();
        $tmp = tempnam(sys_get_temp_dir(), 'gardenstate-ffi-');
        file_put_contents($tmp, $header);
        try {
            if (\FFI::load($tmp) === null) {
                throw new LibraryException("gardenstate: FFI::load of the declarations for $file failed (see the PHP log)");
            }
        } finally {
            unlink($tmp);
        }
    }
}
