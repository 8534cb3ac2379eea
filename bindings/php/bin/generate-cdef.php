<?php
// Generates the PHP FFI declarations of libgardenstate from include/gardenstate.h.
//
//   php bindings/php/bin/generate-cdef.php           # rewrites src/gardenstate.ffi.h and src/Abi.php
//   php bindings/php/bin/generate-cdef.php --check   # exits 1, naming the file, if either is stale
//
// PHP's FFI parser takes C declarations but no preprocessor: this script evaluates the
// header's preprocessor conditionals as a C11 compiler does (not C++, not C23), drops comments
// and directives, and writes
// - src/gardenstate.ffi.h: every typedef, struct and function prototype of the header, one
//   declaration a line, in the header's order (the enum gds_status is left out: in C11 the
//   header declares `typedef int32_t gds_status;`, and its values go to Abi.php), with
//   every `const uint8_t *` written `const char *` (same ABI) so PHP strings pass without a copy;
// - src/Abi.php: the integer constants of the header (#define GDS_* N and the gds_status
//   enumerators) as constants of the class Gardenstate\Abi.
// An #if condition it does not know fails the run: teach it rather than guess.
declare(strict_types=1);

const CONDITIONS = [
    // condition text (after #if / #ifdef / #ifndef) => its value for a C11 compiler
    'ifndef GARDENSTATE_H' => true,
    'if defined(__cplusplus) || __STDC_VERSION__ >= 202311L' => false,
    'ifndef __cplusplus' => true,
    'if __STDC_VERSION__ >= 202311L' => false,
    'ifdef __cplusplus' => false,
];

function fail(string $msg): never
{
    fwrite(STDERR, "generate-cdef.php: $msg\n");
    exit(2);
}

/** The header's text as a C11 compiler sees it: comments removed, conditionals resolved,
 *  directives dropped. Also returns the #define'd integer constants. */
function preprocess(string $header): array
{
    $text = preg_replace('~/\*.*?\*/~s', ' ', $header);
    $text = preg_replace('~//[^\n]*~', ' ', $text);
    // Join continued lines (backslash-newline), as the preprocessor's first phase does.
    $text = str_replace("\\\n", ' ', $text);
    $out = [];
    $defines = [];
    $stack = []; // one bool per open conditional: is this branch taken?
    foreach (explode("\n", $text) as $line) {
        $t = trim($line);
        $active = !in_array(false, $stack, true);
        if ($t !== '' && $t[0] === '#') {
            $d = trim(substr($t, 1));
            if (preg_match('/^(if|ifdef|ifndef)\b/', $d)) {
                $cond = preg_replace('/\s+/', ' ', $d);
                if (!array_key_exists($cond, CONDITIONS)) {
                    fail("unknown preprocessor condition '#$cond': add its C11 value to CONDITIONS");
                }
                $stack[] = CONDITIONS[$cond];
            } elseif (preg_match('/^else\b/', $d)) {
                if (!$stack) fail('#else without #if');
                $stack[count($stack) - 1] = !$stack[count($stack) - 1];
            } elseif (preg_match('/^endif\b/', $d)) {
                if (!$stack) fail('#endif without #if');
                array_pop($stack);
            } elseif ($active && preg_match('/^define\s+(GDS_\w+)\s+(.+)$/', $d, $m)) {
                $v = trim($m[2]);
                if (preg_match('/^\d+$/', $v)) {
                    $defines[$m[1]] = (int)$v;
                } elseif ($v === 'UINT64_MAX') {
                    $defines[$m[1]] = -1; // as PHP's FFI reads a uint64_t of all ones
                }
                // Other macros (strings, expressions) have no place in the cdef.
            } elseif (!preg_match('/^(define|include)\b/', $d)) {
                fail("unknown preprocessor directive '#$d'");
            }
            continue;
        }
        if ($active) $out[] = $line;
    }
    if ($stack) fail('unterminated #if');
    return [implode("\n", $out), $defines];
}

/** Splits C declarations at top-level semicolons and normalizes their whitespace. */
function declarations(string $code): array
{
    $decls = [];
    $depth = 0;
    $cur = '';
    foreach (str_split($code) as $ch) {
        $cur .= $ch;
        if ($ch === '{') $depth++;
        if ($ch === '}') $depth--;
        if ($ch === ';' && $depth === 0) {
            $d = preg_replace('/\s+/', ' ', trim($cur));
            $d = preg_replace('/\s*([(){};,*])\s*/', '$1', $d);
            // Put back the spaces C needs and readers expect.
            $d = preg_replace('/([{;,])(?=\S)/', '$1 ', $d);
            $d = preg_replace('/(?<=\w)\*/', ' *', $d);
            $d = preg_replace('/\)(?=\w)/', ') ', $d);
            $d = preg_replace('/(?<=\w)\{/', ' {', $d);
            $d = preg_replace('/\}(?=\w)/', '} ', $d);
            $decls[] = $d;
            $cur = '';
        }
    }
    if (trim($cur) !== '') fail('unterminated declaration: ' . trim($cur));
    return $decls;
}

function generate(string $root): array
{
    $header = file_get_contents("$root/include/gardenstate.h");
    if ($header === false) fail("cannot read $root/include/gardenstate.h");
    [$code, $defines] = preprocess($header);
    $cdef = [];
    $enum = [];
    foreach (declarations($code) as $d) {
        if (preg_match('/^enum (\w+)\s*\{(.*)\};$/', $d, $m)) {
            if ($m[1] !== 'gds_status') fail("unexpected enum {$m[1]}: decide how PHP should see it");
            foreach (preg_split('/,\s*/', trim($m[2], ' ,')) as $e) {
                if (!preg_match('/^(GDS_\w+)\s*=\s*(\d+)$/', trim($e), $em)) fail("unexpected enumerator '$e'");
                $enum[$em[1]] = (int)$em[2];
            }
            continue;
        }
        // PHP's FFI passes a PHP string, without copying it, only to a char pointer: a
        // read-only byte string parameter is declared `const char *` (the same ABI: a
        // pointer to bytes, with its length passed beside it).
        $cdef[] = str_replace('const uint8_t *', 'const char *', $d);
    }
    if (!$enum) fail('no enum gds_status in the header');
    if (!in_array('typedef int32_t gds_status;', $cdef, true)) fail('the C11 typedef of gds_status is missing');

    $h = "/* Generated by bindings/php/bin/generate-cdef.php from include/gardenstate.h: do not edit.\n"
        . "   The declarations of the header, as PHP's FFI parser takes them (no preprocessor). */\n"
        . implode("\n", $cdef) . "\n";

    $consts = '';
    $group = function (string $title, array $items) use (&$consts) {
        $consts .= "\n    // $title\n";
        foreach ($items as $name => $value) {
            $consts .= sprintf("    public const %s = %d;\n", substr($name, 4), $value);
        }
    };
    $group('gds_status (codes below 10 are outcomes, from 10 up errors)', $enum);
    $group('#define GDS_* integer constants', $defines);
    $php = "<?php\n"
        . "// Generated by bindings/php/bin/generate-cdef.php from include/gardenstate.h: do not edit.\n"
        . "declare(strict_types=1);\n\n"
        . "namespace Gardenstate;\n\n"
        . "/** The integer constants of include/gardenstate.h, without their GDS_ prefix. */\n"
        . "final class Abi\n{"
        . $consts
        . "}\n";
    return ['src/gardenstate.ffi.h' => $h, 'src/Abi.php' => $php];
}

$here = dirname(__DIR__);
$root = dirname($here, 2);
$check = in_array('--check', array_slice($argv, 1), true);
$stale = [];
foreach (generate($root) as $rel => $content) {
    $path = "$here/$rel";
    $old = is_file($path) ? file_get_contents($path) : null;
    if ($old === $content) continue;
    if ($check) {
        $stale[] = "bindings/php/$rel";
    } else {
        file_put_contents($path, $content);
        echo "wrote bindings/php/$rel\n";
    }
}
if ($stale) {
    fwrite(STDERR, 'stale: ' . implode(', ', $stale) . " differ from what include/gardenstate.h gives;"
        . " regenerate with: php bindings/php/bin/generate-cdef.php\n");
    exit(1);
}
if ($check) echo "cdef check: src/gardenstate.ffi.h and src/Abi.php match include/gardenstate.h\n";
