<?php
// End to end: php-fpm (4 static children) behind nginx, serving tests/app/index.php with
// the SessionHandler; test.sh starts both and passes:
//   GDS_PHP_URL (http://127.0.0.1:PORT/), GDS_PHP_SEGMENT, GDS_PHP_PIDFILE, GDS_CLI,
//   GARDENSTATE_LIB, GDS_PHP_REPO (the checkout, for the Python binding).
declare(strict_types=1);

require __DIR__ . '/lib.php';

const COOKIE = 'PHPSESSID';

/** One HTTP/1.0 request; returns [status, body, Set-Cookie session id or null]. */
function http(string $query, ?string $sid = null): array
{
    $url = parse_url(getenv('GDS_PHP_URL'));
    $fp = stream_socket_client("tcp://{$url['host']}:{$url['port']}", $errno, $err, 30);
    check($fp !== false, "connect: $err");
    stream_set_timeout($fp, 120);
    fwrite($fp, "GET /index.php?$query HTTP/1.0\r\nHost: localhost\r\n"
        . ($sid !== null ? 'Cookie: ' . COOKIE . "=$sid\r\n" : '') . "\r\n");
    $resp = stream_get_contents($fp);
    fclose($fp);
    check($resp !== false && $resp !== '', "no answer to $query");
    [$head, $body] = explode("\r\n\r\n", $resp, 2) + [1 => ''];
    preg_match('~^HTTP/\S+ (\d+)~', $head, $m);
    $set = preg_match('~^Set-Cookie: ' . COOKIE . '=([^;\r\n]*)~mi', $head, $c) ? $c[1] : null;
    return [(int)($m[1] ?? 0), $body, $set];
}

/** A count request: returns [count, pid]. */
function count_once(string &$sid): array
{
    [$status, $body, $set] = http('op=count', $sid === '' ? null : $sid);
    check($status === 200 && preg_match('/^(\d+) (\d+)$/', trim($body), $m) === 1, "count: $status $body");
    if ($set !== null) {
        $sid = $set;
    }
    return [(int)$m[1], (int)$m[2]];
}

function wait_for_pidfile(): int
{
    $file = getenv('GDS_PHP_PIDFILE');
    for ($i = 0; $i < 3000; $i++) { // bounded: 30 s
        clearstatcache();
        if (is_file($file) && ($pid = (int)file_get_contents($file)) > 0) {
            unlink($file);
            return $pid;
        }
        usleep(10000);
    }
    throw new TestFailure('the app never wrote its pid');
}

function stored_count(string $sid): array
{
    $seg = getenv('GDS_PHP_SEGMENT');
    exec(escapeshellarg(getenv('GDS_CLI')) . ' get ' . escapeshellarg($seg) . ' ' . escapeshellarg("session:$sid") . ' --raw 2>&1', $out, $rc);
    check_same(0, $rc, 'gardenstate get exit code (' . implode(' ', $out) . ')');
    $cli = json_decode(implode("\n", $out), true)['count'] ?? null;
    $py = 'import json, sys; from gardenstate import Store; s = Store.attach(sys.argv[1]);'
        . ' print(json.loads(s.get(b"session:" + sys.argv[2].encode()))["count"])';
    $cmd = 'PYTHONPATH=' . escapeshellarg(getenv('GDS_PHP_REPO') . '/bindings/python') . ' python3 -c '
        . escapeshellarg($py) . ' ' . escapeshellarg($seg) . ' ' . escapeshellarg($sid) . ' 2>&1';
    exec($cmd, $pyout, $rc);
    check_same(0, $rc, 'python exit code (' . implode(' ', $pyout) . ')');
    return [$cli, (int)trim(implode('', $pyout))];
}

function test_a_counter_increments_by_exactly_one_over_1000_requests(): void
{
    $sid = '';
    $pids = [];
    for ($i = 1; $i <= 1000; $i++) {
        [$n, $pid] = count_once($sid);
        check_same($i, $n, "count at request $i");
        $pids[$pid] = true;
    }
    [$cli, $py] = stored_count($sid);
    check_same(1000, $cli, 'count read by the gardenstate CLI');
    check_same(1000, $py, 'count read by the Python binding');
    fwrite(STDOUT, '     1000 requests served by ' . count($pids) . " FPM children\n");
}

/** How many mappings of the session segment's file FPM child $pid has, and of a deleted one. */
function segment_mappings(int $pid): array
{
    $path = (getenv('GARDENSTATE_SHM_DIR') ?: '/dev/shm') . '/' . getenv('GDS_PHP_SEGMENT');
    $maps = file_get_contents("/proc/$pid/maps");
    check($maps !== false, "read /proc/$pid/maps");
    $deleted = substr_count($maps, "$path (deleted)");
    return [substr_count($maps, $path) - $deleted, $deleted];
}

function test_each_fpm_child_keeps_its_handle_and_reopens_a_recreated_segment(): void
{
    $sid = '';
    $pids = [];
    for ($i = 0; $i < 40; $i++) {
        $pids[count_once($sid)[1]] = true;
    }
    // Between requests an FPM child still maps the segment (the handle kept by
    // gds_open_process), and 40 more requests add no mapping (the same handle is reused).
    $idle = array_map('segment_mappings', array_keys($pids));
    for ($i = 0; $i < 40; $i++) {
        $pids[count_once($sid)[1]] = true;
    }
    foreach (array_keys($pids) as $k => $pid) {
        [$live] = segment_mappings($pid);
        check($live >= 1, "FPM child $pid maps the segment while idle");
        check(!isset($idle[$k]) || $idle[$k][0] === $live, "FPM child $pid: no new mapping over 40 requests");
    }
    // An operator destroys the segment and creates it again with other options (the CLI):
    // the next requests open the new one (no store option given: any shape is accepted).
    $seg = getenv('GDS_PHP_SEGMENT');
    $cli = escapeshellarg(getenv('GDS_CLI'));
    exec("$cli destroy --yes --force " . escapeshellarg($seg) . " 2>&1 && $cli create " . escapeshellarg($seg)
        . ' --max-entries 70000 2>&1', $out, $rc);
    check_same(0, $rc, 'gardenstate destroy + create (' . implode(' ', $out) . ')');
    $after = [];
    for ($i = 1; $i <= 40; $i++) {
        [$n, $pid] = count_once($sid);
        check_same($i, $n, 'the session starts again in the new segment');
        $after[$pid] = true;
    }
    [$stored] = stored_count($sid);
    check_same(40, $stored, 'the new segment holds it');
    foreach (array_keys($after) as $pid) {
        check_same([1, 0], [min(1, segment_mappings($pid)[0]), segment_mappings($pid)[1]],
            "FPM child $pid maps the new segment and no longer the destroyed one");
    }
}

function test_8_concurrent_clients_of_one_session_serialize(): void
{
    $sid = '';
    [$base] = count_once($sid);
    $per = 50;
    $tmp = sys_get_temp_dir() . '/gds-php-e2e-' . getmypid();
    $kids = [];
    for ($c = 0; $c < 8; $c++) {
        $pid = pcntl_fork();
        if ($pid === 0) {
            $seen = [];
            try {
                for ($i = 0; $i < $per; $i++) {
                    $seen[] = count_once($sid);
                }
            } catch (Throwable $e) {
                $seen = ['error' => $e->getMessage()];
            }
            file_put_contents("$tmp.$c", json_encode($seen));
            posix_kill(getmypid(), SIGKILL);
        }
        $kids[] = $pid;
    }
    foreach ($kids as $pid) {
        pcntl_waitpid($pid, $st);
    }
    $counts = [];
    $pids = [];
    for ($c = 0; $c < 8; $c++) {
        $seen = json_decode((string)@file_get_contents("$tmp.$c"), true);
        @unlink("$tmp.$c");
        check(is_array($seen) && !isset($seen['error']), "client $c: " . ($seen['error'] ?? 'no result'));
        foreach ($seen as [$n, $pid]) {
            $counts[] = $n;
            $pids[$pid] = true;
        }
    }
    sort($counts);
    check_same(range($base + 1, $base + 8 * $per), $counts, 'every request saw its own count');
    check(count($pids) >= 2, 'the requests went to several FPM children');
    [$cli, $py] = stored_count($sid);
    check_same($base + 8 * $per, $cli, 'final count (CLI)');
    check_same($base + 8 * $per, $py, 'final count (Python)');
}

function test_an_fpm_child_killed_with_sigkill_loses_no_answered_increment(): void
{
    $sid = '';
    for ($i = 0; $i < 5; $i++) {
        [$n] = count_once($sid);
    }
    check_same(5, $n, 'answered before the kills');

    // 1. Killed after answering (the lock given back): its increment stays.
    [$n] = (function () use (&$sid) {
        [$status, $body] = http('op=count_linger', $sid);
        check($status === 200, "count_linger: $status $body");
        return [(int)explode(' ', trim($body))[0]];
    })();
    check_same(6, $n, 'count_linger answered');
    posix_kill(wait_for_pidfile(), SIGKILL);

    // 2. Killed while holding the session's lock, before answering: a request waiting for
    // the lock takes it over at once, and the unanswered increment is not counted.
    $holder = pcntl_fork();
    if ($holder === 0) {
        try {
            http('op=hold', $sid);
        } catch (Throwable) {
        }
        posix_kill(getmypid(), SIGKILL);
    }
    $victim = wait_for_pidfile();
    $waiter = pcntl_fork();
    if ($waiter === 0) {
        $code = 1;
        try {
            [$n] = count_once($sid);
            $code = $n === 7 ? 0 : 2;
        } catch (Throwable) {
        }
        exit($code);
    }
    usleep(200000); // let the waiter reach the lock (it may also come after the kill: both are correct)
    posix_kill($victim, SIGKILL);
    pcntl_waitpid($waiter, $st);
    pcntl_waitpid($holder, $hst);
    check(pcntl_wifexited($st) && pcntl_wexitstatus($st) === 0, 'the waiting request answered 7 (status ' . $st . ')');
    [$n] = count_once($sid);
    check_same(8, $n, 'the next request');
    [$cli, $py] = stored_count($sid);
    check_same(8, $cli, 'stored count (CLI)');
    check_same(8, $py, 'stored count (Python)');
}

function test_a_session_written_by_python_is_continued_by_php(): void
{
    $sid = rtrim(strtr(base64_encode(random_bytes(32)), '+/', '-_'), '=');
    $py = 'import sys; from gardenstate import Store; s = Store.attach(sys.argv[1]);'
        . ' s.set(b"session:" + sys.argv[2].encode(), b"{\"count\": 41}", sliding=600)';
    exec('PYTHONPATH=' . escapeshellarg(getenv('GDS_PHP_REPO') . '/bindings/python') . ' python3 -c ' . escapeshellarg($py)
        . ' ' . escapeshellarg(getenv('GDS_PHP_SEGMENT')) . ' ' . escapeshellarg($sid) . ' 2>&1', $out, $rc);
    check_same(0, $rc, 'python set (' . implode(' ', $out) . ')');
    [$n] = count_once($sid);
    check_same(42, $n, 'PHP continued the Python session');
}

function clients(): int
{
    exec(escapeshellarg(getenv('GDS_CLI')) . ' stats ' . escapeshellarg(getenv('GDS_PHP_SEGMENT')) . ' --json 2>&1', $out, $rc);
    check_same(0, $rc, 'gardenstate stats (' . implode(' ', $out) . ')');
    $stats = json_decode(implode("\n", $out), true);
    check(isset($stats['stats']['clients']), 'stats has clients: ' . implode(' ', $out));
    return (int)$stats['stats']['clients'];
}

function test_a_fatal_error_gives_back_the_lock_and_the_client_slot(): void
{
    $sid = '';
    count_once($sid);
    $before = clients();
    for ($i = 0; $i < 20; $i++) {
        [$status] = http('op=fatal', $sid);
        check_same(500, $status, 'a fatal error is a 500');
    }
    [$n] = count_once($sid); // would wait forever on a lock left behind
    check_same(22, $n, 'the session after 20 fatal errors (PHP writes it at shutdown, as with files)');
    check_same($before, clients(), 'client slots in use after 20 fatal errors');
}

function test_bad_input_gives_a_clear_exception_not_a_fatal_error(): void
{
    $cases = [
        'missing' => ['NoSegmentException', 'no such segment'],
        'incompatible' => ['IncompatibleException', 'max_value'],
        'full' => ['FullException', 'full'],
        'big' => ['ValueTooLargeException', 'max_value'],
        'object' => ['EncodingException', 'ArrayObject'],
        'badid' => ['InvalidSessionIdException', '../../etc/passwd'],
    ];
    foreach ($cases as $op => [$class, $needle]) {
        [$status, $body] = http("op=$op");
        check($status === 200, "$op: HTTP $status (a fatal error?): $body");
        check(str_starts_with($body, "EXCEPTION Gardenstate\\$class: ") && str_contains($body, $needle), "$op: $body");
    }
    // Left to the write at the end of the request, the same failure is a warning in the log
    // (test.sh fails on any fatal error there), and the answer is unharmed.
    [$status, $body] = http('op=big_end');
    check($status === 200 && trim($body) === 'end', "big_end: HTTP $status: $body");
    // The worker that threw still serves.
    $sid = '';
    [$n] = count_once($sid);
    check_same(1, $n, 'a new session after the bad input');
}

exit(run_tests('php e2e (php-fpm behind nginx)'));
