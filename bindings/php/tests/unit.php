<?php
// The binding's tests in one CLI process: the generated declarations, the Store wrapper over
// the C ABI, and the SessionHandler driven through PHP's session functions.
//   GARDENSTATE_LIB=target/release/libgardenstate.so php bindings/php/tests/unit.php
declare(strict_types=1);

require __DIR__ . '/lib.php';

use Gardenstate\Abi;
use Gardenstate\SessionHandler;
use Gardenstate\Store;

// session_start() needs headers unsent: the runner writes to STDOUT directly, past PHP's output layer.
ini_set('session.use_cookies', '0');
ini_set('session.use_strict_mode', '1');
ini_set('session.cache_limiter', '');

$SEG = 'gds-phptest-' . getmypid();

function seg(string $suffix = ''): string
{
    global $SEG;
    return $SEG . $suffix;
}

function test_declarations_match_the_header(): void
{
    $root = dirname(__DIR__, 3);
    exec(PHP_BINARY . ' ' . escapeshellarg(dirname(__DIR__) . '/bin/generate-cdef.php') . ' --check 2>&1', $out, $rc);
    check_same(0, $rc, 'generate-cdef.php --check (' . implode(' ', $out) . ')');
    // Every function of the header is declared, and resolves in the library.
    preg_match_all('/^\S.*\b(gds_\w+)\(/m', file_get_contents("$root/include/gardenstate.h"), $m);
    $ffi = Gardenstate\Library::ffi();
    foreach (array_unique($m[1]) as $fn) {
        check(preg_match("/\\b$fn\\(/", Gardenstate\Library::declarations()) === 1, "$fn is not declared");
    }
    check_same(Abi::ABI_VERSION, $ffi->gds_abi_version(), 'gds_abi_version()');
    check_same(Abi::VERSION_MAJOR * 1000000 + Abi::VERSION_MINOR * 1000 + Abi::VERSION_PATCH,
        $ffi->gds_version_number(), 'gds_version_number()');
}

function test_store_reads_and_writes(): void
{
    $s = Store::open(seg());
    try {
        check(is_int($s->set('a', "bin\0ary", 60000, true)), 'set returns a version');
        check_same("bin\0ary", $s->get('a'), 'get');
        check_same(null, $s->get('absent'), 'get of an absent key');
        check_same(false, $s->add('a', 'x'), 'add of a present key');
        check_same(true, $s->add('b', ''), 'add of an absent key');
        check_same('', $s->get('b'), 'empty value');
        check_same(true, $s->exists('b'), 'exists');
        check_same(true, $s->delete('a'), 'delete');
        check_same(false, $s->delete('a'), 'delete again');
        check_same(65536, $s->info()['max_entries'], 'info');
        check_throws(InvalidArgumentException::class, fn() => $s->set('c', 'v', 0), 'at least 1 ms');
    } finally {
        $s->close();
    }
    check_throws(Gardenstate\GardenstateException::class, fn() => $s->get('a'), 'closed');
}

function test_store_errors_name_their_cause(): void
{
    $s = Store::open(seg(), []);
    $max = $s->info()['max_value'];
    check_throws(Gardenstate\ValueTooLargeException::class, fn() => $s->set('k', str_repeat('x', $max + 1)), 'max_value');
    check_throws(Gardenstate\KeyLengthException::class, fn() => $s->set(str_repeat('k', 300), 'v'), 'max_key');
    check_throws(Gardenstate\KeyLengthException::class, fn() => $s->get(''), 'key');
    check_throws(Gardenstate\NoSegmentException::class, fn() => Store::attach(seg('-none')), 'no such segment', seg('-none'));
    check_throws(Gardenstate\IncompatibleException::class, fn() => Store::open(seg(), ['max_value' => 4096]), 'max_value');
    check_throws(Gardenstate\SegmentExistsException::class, fn() => Store::create(seg()), seg());
    check_throws(Gardenstate\GardenstateException::class, fn() => Store::open('bad/name'), 'segment name');
    check_throws(InvalidArgumentException::class, fn() => Store::open(seg(), ['max_vlaue' => 1]), 'max_vlaue');
    check_throws(LogicException::class, fn() => clone $s, 'cannot be cloned');
    // No creation option given: an existing segment is attached whatever its options.
    $t = Store::create(seg('-small'), ['max_value' => 4096]);
    check_same(4096, Store::open(seg('-small'))->info()['max_value'], 'open without options attaches');
    $full = Store::create(seg('-full'), ['max_entries' => 16, 'capacity_bytes' => 65536]);
    check_throws(Gardenstate\FullException::class, function () use ($full) {
        for ($i = 0; $i < 100000; $i++) {
            $full->set("k$i", str_repeat('v', 100));
        }
    }, 'full');
    check_same('v', substr((string)$full->get('k0'), 0, 1), 'a full segment keeps what it had');
}

function test_open_checks_only_the_options_given_against_a_segment_the_cli_made(): void
{
    exec(escapeshellarg(getenv('GDS_CLI')) . ' create ' . escapeshellarg(seg('-cli'))
        . ' --max-entries 3000 --max-value 8192 --evict 2>&1', $out, $rc);
    check_same(0, $rc, 'gardenstate create (' . implode(' ', $out) . ')');
    $s = Store::open(seg('-cli'));
    check_same([3000, 8192], [$s->info()['max_entries'], $s->info()['max_value']], 'open with no options attaches');
    check_same(8192, Store::open(seg('-cli'), ['max_value' => 8192, 'evict' => true])->info()['max_value'],
        'the same values, given');
    foreach ([
        [['max_entries' => 65536], ['max_entries=3000', 'max_entries=65536 was given', '--max-entries 65536']],
        [['evict' => false], ['evict=true, but evict=false was given', '(without --evict)']],
    ] as [$opts, $parts]) {
        $e = check_throws(Gardenstate\IncompatibleException::class, fn() => Store::open(seg('-cli'), $opts), ...$parts);
        check(str_contains($e->getMessage(), 'without giving'), 'a fix that keeps the sessions: ' . $e->getMessage());
        check(!str_contains($e->getMessage(), 'destroy it'), 'no advice to destroy a live segment: ' . $e->getMessage());
    }
}

/** The address of the gds_store handle a handler uses once opened (the process's one). */
function handler_handle(SessionHandler $h): int
{
    $h->open('', 'PHPSESSID');
    $store = (new ReflectionProperty(SessionHandler::class, 'store'))->getValue($h);
    $raw = (new ReflectionProperty(Store::class, 'h'))->getValue($store);
    return Gardenstate\Library::ffi()->cast('uintptr_t', $raw)->cdata;
}

function test_the_handler_keeps_one_handle_per_process_across_requests_forks_and_recreation(): void
{
    $seg = seg('-keep');
    $first = handler_handle(new SessionHandler($seg));
    check_same($first, handler_handle(new SessionHandler($seg)), 'the next request reuses the handle');
    $s = Store::process($seg);
    $s->close(); // leaves the process's handle open
    check_same($first, handler_handle(new SessionHandler($seg)), 'still the same handle after close()');
    check($first !== handler_handle(new SessionHandler($seg, ['store' => ['max_value' => 1 << 20]])),
        'other store options: another handle');

    // A forked child never uses its parent's handle: it opens its own, which works.
    $child = pcntl_fork();
    if ($child === 0) {
        $mine = handler_handle(new SessionHandler($seg));
        Store::process($seg)->set('from-child', 'yes');
        exit($mine !== $first && handler_handle(new SessionHandler($seg)) === $mine ? 0 : 1);
    }
    pcntl_waitpid($child, $st);
    check(pcntl_wifexited($st) && pcntl_wexitstatus($st) === 0, "the child opened and kept its own handle (status $st)");
    check_same('yes', Store::process($seg)->get('from-child'), 'the child wrote to the segment');
    check_same($first, handler_handle(new SessionHandler($seg)), 'the parent still has its handle');

    // Destroyed and recreated (by the CLI, an operator): the next request opens the new one.
    Store::destroy($seg);
    Store::create($seg, ['max_value' => 4096])->close();
    check($first !== handler_handle(new SessionHandler($seg)), 'a new handle for the recreated segment');
    $new = Store::process($seg);
    check_same(4096, $new->info()['max_value'], 'the recreated segment');
    check_same(null, $new->get('from-child'), 'the old entries went with the old segment');
}

function test_lock_is_exclusive_and_a_dead_holders_lock_is_taken_over_at_once(): void
{
    $s = Store::open(seg());
    $s->set('l', 'v0', 60000, true);
    $l = $s->lock('l');
    check_same('v0', $l['value'], 'locked value');
    $e = check_throws(Gardenstate\LockedException::class, fn() => $s->lock('l', 3600000), 'held by lock id');
    check_same($l['lock_id'], $e->holderLockId, 'holder lock id');
    check_throws(Gardenstate\LockLostException::class, fn() => $s->unlock('l', $l['lock_id'] + 1000), 'lock id');
    check_same(true, $s->unlock('l', $l['lock_id']), 'unlock');
    check_same(null, $s->lock('absent'), 'lock of an absent key');

    // A child takes the lock and is killed with SIGKILL: the lock is taken over at once,
    // whatever the age limit.
    $pid = pcntl_fork();
    if ($pid === 0) {
        $s->lock('l');
        posix_kill(getmypid(), SIGKILL);
    }
    pcntl_waitpid($pid, $status);
    check(pcntl_wifsignaled($status), 'the child was killed');
    $t = $s->lock('l', 3600000);
    check_same(true, $t['took_over'], 'took over the dead child\'s lock');
    check(is_int($s->setAndUnlock('l', $t['lock_id'], 'v1', 60000, true)), 'set and unlock');
    check_same('v1', $s->get('l'), 'value after takeover');
}

/** Starts a session of $id (null: a new one) with $h; returns the id. */
function session(SessionHandler $h, ?string $id = null): string
{
    session_set_save_handler($h, true);
    session_id($id ?? ''); // '': PHP makes a new id
    check(session_start(), 'session_start');
    return session_id();
}

function test_session_counter_is_json_under_the_shared_key(): void
{
    $h = new SessionHandler(seg());
    $id = session($h);
    check(preg_match(SessionHandler::ID_PATTERN, $id) === 1 && strlen($id) === 43, "new id $id");
    $_SESSION['count'] = 1;
    $_SESSION['f'] = 1.5;
    $_SESSION['list'] = [1, 'two'];
    session_write_close();
    $raw = Store::open(seg())->get("session:$id");
    check_same('{"count":1,"f":1.5,"list":[1,"two"]}', $raw, 'stored JSON');
    session($h, $id);
    check_same(['count' => 1, 'f' => 1.5, 'list' => [1, 'two']], $_SESSION, 'read back');
    $_SESSION['count']++;
    session_write_close();
    check_same(2, json_decode(Store::open(seg())->get("session:$id"), true)['count'], 'count');
}

/** Sets the segment's write mode (the replicator's call, which PHP does not wrap) through $s's handle. */
function set_write_mode(Store $s, int $mode): void
{
    $raw = (new ReflectionProperty(Store::class, 'h'))->getValue($s);
    check_same(Gardenstate\Abi::OK, Gardenstate\Library::ffi()->gds_set_write_mode($raw, $mode), 'set write mode');
}

function test_a_read_only_segment_serves_reads_and_answers_a_write_503_with_retry_after(): void
{
    $s = Store::open(seg());
    $h = new SessionHandler(seg());
    $id = session($h);
    $_SESSION['count'] = 1;
    session_write_close();
    $before = $s->replicationState();
    check_same(['primary', true, 0], [$before['role_name'], $before['writable'], $before['epoch']], 'primary');
    set_write_mode($s, Gardenstate\Abi::WRITE_MODE_REPLICA); // a standby, a failover
    try {
        $now = $s->replicationState();
        check_same([Gardenstate\Abi::ROLE_STANDBY, 'standby', false], [$now['role'], $now['role_name'], $now['writable']],
            'standby');
        check($now['changes'] > $before['changes'], 'the change counter moved');
        session($h, $id); // read without the lock
        check_same(['count' => 1], $_SESSION, 'read on a read-only segment');
        session_write_close(); // unchanged: nothing to write
        check_same(200, http_response_code() ?: 200, 'an unchanged session is served');
        session($h, $id);
        $_SESSION['count']++;
        check_throws(Gardenstate\ReadOnlyException::class, fn() => session_write_close(), 'read-only');
        check_same(503, http_response_code(), 'status of a refused write');
    } finally {
        set_write_mode($s, Gardenstate\Abi::WRITE_MODE_WRITABLE);
        http_response_code(200);
    }
    check_same('{"count":1}', $s->get("session:$id"), 'the refused write changed nothing');
}

function test_a_session_written_by_another_runtime_is_read(): void
{
    $s = Store::open(seg());
    $id = str_repeat('a1B2', 16); // the Lua helper's 64 hex-like characters
    $s->set("session:$id", '{"count":41,"user":"ann"}', 60000, true);
    $h = new SessionHandler(seg());
    session($h, $id);
    check_same(['count' => 41, 'user' => 'ann'], $_SESSION, 'decoded');
    $_SESSION['count']++;
    session_write_close();
    check_same('{"count":42,"user":"ann"}', $s->get("session:$id"), 'written back');
}

function test_lock_is_held_until_session_write_close(): void
{
    $h = new SessionHandler(seg());
    $id = session($h);
    $_SESSION['x'] = 1;
    session_write_close();
    $s = Store::open(seg());
    session($h, $id);
    check_throws(Gardenstate\LockedException::class, fn() => $s->lock("session:$id", 3600000));
    session_write_close(); // unchanged: lazy_write gives the lock back without writing
    $l = $s->lock("session:$id");
    check_same('{"x":1}', $l['value'], 'value kept');
    $s->unlock("session:$id", $l['lock_id']);

    session($h, $id);
    session_abort();
    $s->unlock("session:$id", $s->lock("session:$id")['lock_id']);
    session_set_save_handler($h, true);
    session_id($id);
    session_start(['read_and_close' => true]);
    check_same(['x' => 1], $_SESSION, 'read_and_close');
    $s->unlock("session:$id", $s->lock("session:$id")['lock_id']);
}

function test_session_waits_for_the_lock_of_another_process(): void
{
    $h = new SessionHandler(seg());
    $id = session($h);
    $_SESSION['n'] = 0;
    session_write_close();
    $pids = [];
    for ($c = 0; $c < 4; $c++) {
        $pid = pcntl_fork();
        if ($pid === 0) {
            for ($i = 0; $i < 25; $i++) {
                session($h, $id);
                $n = $_SESSION['n'];
                usleep(200); // a read-modify-write window: without the lock, increments get lost
                $_SESSION['n'] = $n + 1;
                session_write_close();
            }
            posix_kill(getmypid(), SIGKILL); // skip the parent's shutdown code
        }
        $pids[] = $pid;
    }
    foreach ($pids as $pid) {
        pcntl_waitpid($pid, $st);
    }
    session($h, $id);
    check_same(100, $_SESSION['n'], '4 processes x 25 locked increments');
    session_write_close();
}

function test_empty_sessions_are_not_kept(): void
{
    $h = new SessionHandler(seg());
    $id = session($h);
    session_write_close();
    check_same(false, Store::open(seg())->exists("session:$id"), 'an empty new session');
    $id = session($h);
    $_SESSION['a'] = 1;
    session_write_close();
    session($h, $id);
    $_SESSION = [];
    session_write_close();
    check_same(false, Store::open(seg())->exists("session:$id"), 'an emptied session');
}

function test_bad_ids_and_bad_values_throw_and_keep_the_session(): void
{
    $h = new SessionHandler(seg());
    $id = session($h);
    $_SESSION['keep'] = 'me';
    session_write_close();
    $s = Store::open(seg());

    session($h, $id);
    $_SESSION['obj'] = new ArrayObject();
    check_throws(Gardenstate\EncodingException::class, fn() => session_write_close(), "['obj']", 'ArrayObject');
    check_same('{"keep":"me"}', $s->get("session:$id"), 'kept after an encoding error');
    $s->unlock("session:$id", $s->lock("session:$id")['lock_id']); // the lock was given back

    session($h, $id);
    $_SESSION['big'] = str_repeat('x', $s->info()['max_value'] + 1);
    check_throws(Gardenstate\ValueTooLargeException::class, fn() => session_write_close(), 'max_value');
    check_same('{"keep":"me"}', $s->get("session:$id"), 'kept after an oversized value');
    $s->unlock("session:$id", $s->lock("session:$id")['lock_id']);

    session($h, $id);
    $_SESSION['bin'] = "\xff\xfe";
    check_throws(Gardenstate\EncodingException::class, fn() => session_write_close(), 'UTF-8');
    session_abort();

    // Strict mode (recommended): a malformed or unknown id is replaced by a new one.
    $new = session($h, 'bad.id/../x');
    check($new !== 'bad.id/../x' && strlen($new) === 43, "replaced: $new");
    session_write_close();
    // Without strict mode PHP hands the id to read(): a clear exception.
    ini_set('session.use_strict_mode', '0');
    try {
        session_set_save_handler($h, true);
        session_id('bad.id/../x');
        check_throws(Gardenstate\InvalidSessionIdException::class, fn() => session_start(), 'bad.id/../x', '[A-Za-z0-9_-]');
    } finally {
        ini_set('session.use_strict_mode', '1');
    }
}

function test_php_encoding_and_regenerate_id(): void
{
    $h = new SessionHandler(seg(), ['encoding' => 'php', 'key_prefix' => 'php:']);
    ini_set('session.serialize_handler', 'php');
    try {
        $id = session($h);
        $_SESSION['o'] = new ArrayObject([1, 2]);
        session_write_close();
        check(str_starts_with((string)Store::open(seg())->get("php:$id"), 'o|O:11:"ArrayObject"'), 'php encoding stored');
        session($h, $id);
        check_same(2, count($_SESSION['o']), 'object read back');
        session_regenerate_id(true);
        $new = session_id();
        session_write_close();
        check_same(false, Store::open(seg())->exists("php:$id"), 'old id destroyed');
        check(Store::open(seg())->exists("php:$new"), 'new id written');
    } finally {
        ini_set('session.serialize_handler', 'php_serialize');
    }
    check_throws(InvalidArgumentException::class, fn() => new SessionHandler(seg(), ['encoding' => 'xml']), 'xml');
    check_throws(InvalidArgumentException::class, fn() => new SessionHandler(seg(), ['ttl' => 1]), 'ttl');
    check_throws(InvalidArgumentException::class, fn() => new SessionHandler(seg(), ['ttl_ms' => '30']), 'ttl_ms');
    check_throws(InvalidArgumentException::class, fn() => new SessionHandler(seg(), ['lock_timeout_ms' => 0]), 'lock_timeout_ms');
    check_throws(InvalidArgumentException::class, fn() => new SessionHandler(seg(), ['sid_bytes' => '32']), 'sid_bytes');
}

function test_validate_id_and_gc(): void
{
    $h = new SessionHandler(seg());
    $h->open('', 'PHPSESSID');
    check_same(false, $h->validateId(str_repeat('z', 43)), 'unknown id');
    check_same(false, $h->validateId('short'), 'malformed id');
    $id = session($h);
    $_SESSION['v'] = 1;
    session_write_close();
    check_same(true, $h->validateId($id), 'known id');
    check(is_int($h->gc(1440)), 'gc returns a count');
}

try {
    $rc = run_tests('php unit');
} finally {
    foreach (['', '-small', '-full', '-cli', '-keep'] as $x) {
        Store::destroy(seg($x));
    }
}
exit($rc);
