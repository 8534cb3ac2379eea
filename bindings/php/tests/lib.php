<?php
// A minimal test runner for the PHP binding's tests (no PHPUnit: nothing beyond php8.2-cli).
// A test file defines functions named test_*; run(__FILE__-defined tests) calls each one,
// prints "ok   name" or "FAIL name: message", and ends with "N passed, N failed".
declare(strict_types=1);

require_once dirname(__DIR__) . '/autoload.php';

final class TestFailure extends Exception {}

function check(bool $cond, string $msg): void
{
    if (!$cond) {
        throw new TestFailure($msg);
    }
}

function check_same(mixed $expected, mixed $actual, string $what): void
{
    if ($expected !== $actual) {
        throw new TestFailure("$what: expected " . var_export($expected, true) . ', got ' . var_export($actual, true));
    }
}

/** Calls $f, which must throw $class with a message containing each of $needles. */
function check_throws(string $class, callable $f, string ...$needles): Throwable
{
    try {
        $f();
    } catch (Throwable $e) {
        check($e instanceof $class, "expected $class, got " . get_class($e) . ': ' . $e->getMessage());
        foreach ($needles as $n) {
            check(str_contains($e->getMessage(), $n), "message lacks '$n': " . $e->getMessage());
        }
        return $e;
    }
    throw new TestFailure("expected $class, nothing was thrown");
}

/** Runs every test_* function defined by the calling file; returns the exit status. */
function run_tests(string $suite): int
{
    $passed = $failed = 0;
    $tests = array_filter(get_defined_functions()['user'], fn($f) => str_starts_with($f, 'test_'));
    foreach ($tests as $t) {
        $t0 = hrtime(true);
        try {
            $t();
            $passed++;
            fprintf(STDOUT, "ok   %s (%.0f ms)\n", $t, (hrtime(true) - $t0) / 1e6);
        } catch (Throwable $e) {
            $failed++;
            fprintf(STDOUT, "FAIL %s: %s: %s\n     at %s:%d\n", $t, get_class($e), $e->getMessage(), $e->getFile(), $e->getLine());
        }
    }
    fwrite(STDOUT, "$suite: $passed passed, $failed failed\n");
    return $failed === 0 ? 0 : 1;
}
