<?php
// A PHP session save handler storing sessions in a gardenstate segment.
//
//   session_set_save_handler(new Gardenstate\SessionHandler('sessions'), true);
//
// Layout (the one the Lua helper and the Flask interface use): the session `id` lives under
// the key `key_prefix . id` (default "session:"), with a sliding expiry of
// session.gc_maxlifetime (every lock, read or unlock pushes the deadline out). With the
// default 'json' encoding the value is the session's variables as a JSON object, so the
// other runtimes read and write the same session; 'php' stores PHP's own encoding as is.
//
// Locking, as PHP's files handler: read() takes the session's lock (gds_lock) and the
// request holds it until session_write_close() (or the end of the request, or
// session_abort()); a concurrent request of the same session waits in read(), polling
// with a backoff from 50 us to 2 ms. A lock whose holder process died (an FPM child killed
// by SIGKILL) is taken over by the next request at once; a lock held by a live process is
// taken over only when older than 'lock_timeout_ms' (default: never, as flock()).
//
// A session the client names but the segment lacks gets an entry at once (an empty value,
// added with gds_add, so two first requests of one id still serialize); a session left empty
// at the end of the request is deleted, so cookieless visitors leave nothing behind.
//
// Failover: on a segment that takes no writes (a standby, a fenced primary, a failover in
// progress) read() reads the session without its lock (no lock can be taken there), a request
// that leaves its session unchanged is served as usual, and a write answers the request with
// 503 and `Retry-After: 1` (when the headers are not sent yet: call session_write_close()
// before any output) and throws ReadOnlyException (a warning at the end of the request).
declare(strict_types=1);

namespace Gardenstate;

final class SessionHandler implements \SessionHandlerInterface, \SessionIdInterface, \SessionUpdateTimestampHandlerInterface
{
    /** The session id format: the alphabet and lengths every gardenstate session helper accepts. */
    public const ID_PATTERN = '/^[A-Za-z0-9_-]{16,128}$/D';

    private const OPTIONS = ['key_prefix', 'encoding', 'ttl_ms', 'lock_timeout_ms', 'store', 'sid_bytes'];

    private ?Store $store = null;
    private string $prefix;
    private string $encoding;
    private ?int $ttlMs;
    private ?int $lockTimeoutMs;
    private array $storeOptions;
    private int $sidBytes;
    private int $effectiveTtlMs = 1440000;

    private string $segment;

    /** The session this request holds the lock of: its id, lock id, and whether it was empty when read. */
    private ?string $lockedId = null;
    private int $lockId = 0;
    private bool $readEmpty = false;
    /** The session this request read without its lock: the segment took no writes (ReadOnlyException). */
    private ?string $readOnlyId = null;
    /** Set by a shutdown function registered before PHP's own (see __construct). */
    private bool $shuttingDown = false;
    /** Whether this handler opened its Store (the worker process's, Store::process) or was given one. */
    private bool $ownsStore = true;
    private bool $closeRegistered = false;

    /**
     * $segment: the segment name (opened, or created with $options['store'], at
     * session_start), or an open Store to use.
     *
     * $options:
     * - key_prefix (string, default "session:"): prepended to the id to make the key;
     * - encoding ('json', the default, or 'php'): 'json' stores the variables as a JSON
     *   object (arrays, strings, numbers, booleans, null: an object in the session is refused
     *   with an EncodingException) and sets session.serialize_handler=php_serialize, which it
     *   needs; 'php' stores what session.serialize_handler produces, unread by other runtimes;
     * - ttl_ms (int): the sliding lifetime (default: session.gc_maxlifetime);
     * - lock_timeout_ms (int|null): take over a live holder's lock older than this (default
     *   null: never; a dead holder's lock is taken over at once whatever this is);
     * - store (array): the options of Store::open (creation options, group, library);
     * - sid_bytes (int, default 32): random bytes in a new session id (base64url: 43 chars).
     */
    public function __construct(string|Store $segment = 'sessions', array $options = [])
    {
        $unknown = array_diff(array_keys($options), self::OPTIONS);
        if ($unknown) {
            throw new \InvalidArgumentException('gardenstate: unknown session handler option(s) '
                . implode(', ', $unknown) . '; known: ' . implode(', ', self::OPTIONS));
        }
        foreach (['ttl_ms', 'lock_timeout_ms'] as $k) {
            if (isset($options[$k]) && (!is_int($options[$k]) || $options[$k] < 1)) {
                throw new \InvalidArgumentException("gardenstate: option $k must be an int >= 1 (or null: the default),"
                    . ' got ' . var_export($options[$k], true));
            }
        }
        if (!is_string($options['key_prefix'] ?? '') || !is_array($options['store'] ?? [])) {
            throw new \InvalidArgumentException('gardenstate: option key_prefix must be a string and store an array');
        }
        $this->prefix = $options['key_prefix'] ?? 'session:';
        $this->encoding = $options['encoding'] ?? 'json';
        if ($this->encoding !== 'json' && $this->encoding !== 'php') {
            throw new \InvalidArgumentException("gardenstate: encoding must be 'json' or 'php', got '{$this->encoding}'");
        }
        $this->ttlMs = $options['ttl_ms'] ?? null;
        $this->lockTimeoutMs = $options['lock_timeout_ms'] ?? null;
        $this->storeOptions = $options['store'] ?? [];
        $sidBytes = $options['sid_bytes'] ?? 32;
        if (!is_int($sidBytes) || $sidBytes < 12 || $sidBytes > 96) {
            throw new \InvalidArgumentException('gardenstate: sid_bytes must be an int of 12..96 (ids of 16..128'
                . ' characters), got ' . var_export($sidBytes, true));
        }
        $this->sidBytes = $sidBytes;
        // PHP writes a session still open at the end of the request from its shutdown
        // functions (this one runs first: it is registered before session_set_save_handler
        // registers session_write_close); an exception there would be an uncaught fatal error,
        // so there a failed write is reported as a warning, as PHP's own handlers do.
        register_shutdown_function(function (): void {
            $this->shuttingDown = true;
        });
        if ($segment instanceof Store) {
            $this->store = $segment;
            $this->ownsStore = false;
            $this->segment = $segment->name();
        } else {
            $this->segment = $segment;
        }
        if ($this->encoding === 'json' && ini_get('session.serialize_handler') !== 'php_serialize'
            && ini_set('session.serialize_handler', 'php_serialize') === false) {
            throw new GardenstateException("gardenstate: the json encoding needs session.serialize_handler=php_serialize"
                . ' and it could not be set (is a session already active?): set it in php.ini or the pool');
        }
    }

    public function open(string $path, string $name): bool
    {
        if ($this->store === null) {
            $this->store = Store::process($this->segment, $this->storeOptions);
            if (!$this->closeRegistered) {
                // The session's lock goes back at the end of the request even after a fatal
                // error, when PHP runs no destructor but still runs shutdown functions; this
                // one runs after PHP's session_write_close (registered before).
                $this->closeRegistered = true;
                register_shutdown_function(fn() => $this->release());
            }
        }
        $this->effectiveTtlMs = $this->ttlMs ?? max(1, (int)ini_get('session.gc_maxlifetime')) * 1000;
        return true;
    }

    /**
     * End of the request: writes a session still open and gives its lock back. The worker
     * process's handle stays open for its next request (Store::process; it holds no client
     * slot between calls).
     */
    private function release(): void
    {
        if ($this->lockedId !== null && session_status() === PHP_SESSION_ACTIVE) {
            session_write_close(); // with session_set_save_handler(..., false) PHP would write later
        }
        if ($this->ownsStore && $this->store !== null) {
            $this->close();
            $this->store = null;
        }
    }

    public function close(): bool
    {
        if ($this->lockedId !== null) {
            $key = $this->prefix . $this->lockedId;
            [$empty, $lockId] = [$this->readEmpty, $this->lockId];
            $this->forget();
            // Closed without a write (session_abort, read_and_close): give the lock back; an
            // empty session (made by read() for a new id) is not kept.
            $empty ? $this->store->delete($key) : $this->unlockQuietly($key, $lockId);
        }
        return true;
    }

    public function read(string $id): string|false
    {
        $this->checkId($id);
        if ($this->lockedId !== null) {
            $this->close(); // a lock still held on another id (session_regenerate_id)
        }
        $key = $this->prefix . $id;
        $this->readOnlyId = null;
        $wait = 50;
        while (true) {
            try {
                $l = $this->store->lock($key, $this->lockTimeoutMs);
                if ($l === null) {
                    // No entry yet: make one (empty) so the lock has something to hold; whoever
                    // adds it, the lock decides who goes first.
                    $this->store->add($key, '', $this->effectiveTtlMs, true);
                    continue;
                }
            } catch (LockedException) {
                usleep($wait);
                $wait = min(2000, $wait * 2);
                continue;
            } catch (ReadOnlyException) {
                // No lock on a segment that takes no writes: read the session as it is; a
                // write of it answers 503 (save()).
                $this->readOnlyId = $id;
                return $this->decode($this->store->get($key) ?? '');
            }
            $this->lockedId = $id;
            $this->lockId = $l['lock_id'];
            $this->readEmpty = $l['value'] === '';
            return $this->decode($l['value']);
        }
    }

    public function write(string $id, string $data): bool
    {
        return $this->reported(function () use ($id, $data): bool {
            $this->checkId($id);
            try {
                $this->save($id, $this->encode($data));
            } finally {
                // On any failure (an encoding, a full segment, a value over max_value) the
                // lock is given back and the stored session keeps its previous value.
                if ($this->lockedId === $id) {
                    $this->close();
                }
            }
            return true;
        });
    }

    /** Runs $f; at the end of the request, turns its exception into a warning and false. */
    private function reported(\Closure $f): bool
    {
        try {
            return $f();
        } catch (GardenstateException $e) {
            if (!$this->shuttingDown) {
                throw $e;
            }
            trigger_error(get_class($e) . ': ' . $e->getMessage() . ' (in the session write at the end of the'
                . ' request: call session_write_close() to get this as an exception)', E_USER_WARNING);
            return false;
        }
    }

    private function save(string $id, ?string $value): void
    {
        try {
            $this->saveValue($id, $value);
        } catch (ReadOnlyException $e) {
            // The segment takes no writes (a standby, a fenced primary, a failover): 503 and
            // Retry-After for the client, not a 500; writes come back within about a second.
            if (!headers_sent()) {
                http_response_code(503);
                header('Retry-After: 1');
            }
            throw $e;
        }
    }

    private function saveValue(string $id, ?string $value): void
    {
        $key = $this->prefix . $id;
        if ($value === null) {
            // An empty session is not kept (as the Lua and Flask helpers do).
            $this->store->delete($key);
            if ($this->lockedId === $id) {
                $this->forget();
            }
            return;
        }
        if ($this->lockedId !== $id) {
            // Not read by this handler (session_regenerate_id, session_id() changed by hand).
            $this->store->set($key, $value, $this->effectiveTtlMs, true);
            return;
        }
        try {
            $written = $this->store->setAndUnlock($key, $this->lockId, $value, $this->effectiveTtlMs, true) !== null;
        } catch (LockLostException $e) {
            $this->forget();
            throw new LockLostException("gardenstate: session {$this->shortId($id)}: its lock was taken over by another"
                . ' request (this one held it past lock_timeout_ms, or the segment was changed by hand): this'
                . ' request\'s changes were not written, the other request\'s are kept', Abi::ERR_LOCK_MISMATCH, $e);
        }
        $this->forget();
        // The entry expired or was destroyed while this request held it: write it anew,
        // unless another request has made it again meanwhile (its data wins, as its lock does).
        if (!$written && !$this->store->add($key, $value, $this->effectiveTtlMs, true)) {
            throw new LockLostException("gardenstate: session {$this->shortId($id)} was deleted and made again by another"
                . ' request while this one held its lock: this request\'s changes were not written', Abi::ERR_LOCK_MISMATCH);
        }
    }

    public function updateTimestamp(string $id, string $data): bool
    {
        return $this->reported(fn(): bool => $this->touch($id, $data));
    }

    private function touch(string $id, string $data): bool
    {
        // lazy_write: the data is unchanged. Unlocking (or any access) pushes the sliding
        // deadline out, so giving the lock back is all there is to do.
        if ($this->readOnlyId === $id) {
            return true; // read without a lock on a read-only segment: nothing to give back
        }
        if ($this->lockedId !== $id) {
            return $this->write($id, $data);
        }
        if ($this->encode($data) === null) {
            return $this->write($id, $data);
        }
        $lockId = $this->lockId;
        $this->forget();
        $this->unlockQuietly($this->prefix . $id, $lockId);
        return true;
    }

    public function destroy(string $id): bool
    {
        if (preg_match(self::ID_PATTERN, $id)) {
            if ($this->lockedId === $id) {
                $this->forget();
            }
            $this->store->delete($this->prefix . $id);
        }
        return true;
    }

    public function gc(int $max_lifetime): int|false
    {
        // Entries expire by themselves (never returned once expired); this removes them.
        return $this->store->sweep();
    }

    public function create_sid(): string
    {
        return rtrim(strtr(base64_encode(random_bytes($this->sidBytes)), '+/', '-_'), '=');
    }

    public function validateId(string $id): bool
    {
        return preg_match(self::ID_PATTERN, $id) === 1 && $this->store->exists($this->prefix . $id);
    }

    /** The Store this handler uses (open after session_start). */
    public function store(): ?Store
    {
        return $this->store;
    }

    private function checkId(string $id): void
    {
        if (!preg_match(self::ID_PATTERN, $id)) {
            throw new InvalidSessionIdException('gardenstate: session id ' . json_encode(substr($id, 0, 40), JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE)
                . (strlen($id) > 40 ? '...' : '') . ' (' . strlen($id) . ' characters) is not a session id:'
                . ' ids are 16 to 128 characters from [A-Za-z0-9_-]; with session.use_strict_mode=1 PHP'
                . ' replaces such an id by a new one instead');
        }
    }

    private function forget(): void
    {
        $this->lockedId = null;
        $this->lockId = 0;
        $this->readEmpty = false;
    }

    private function unlockQuietly(string $key, int $lockId): void
    {
        try {
            $this->store->unlock($key, $lockId);
        } catch (LockLostException) {
            // Taken over meanwhile: the new holder has it; nothing of ours is lost.
        }
    }

    private function shortId(string $id): string
    {
        return substr($id, 0, 8) . '...';
    }

    /** The stored value to the string PHP's serializer decodes. */
    private function decode(string $raw): string
    {
        if ($this->encoding === 'php' || $raw === '') {
            return $raw;
        }
        $data = json_decode($raw, true);
        // Not a JSON object (written by hand, or by a runtime using another encoding): an
        // empty session, as the Lua and Flask helpers treat it.
        return is_array($data) ? serialize($data) : '';
    }

    /** PHP's encoded session to the value to store; null for an empty session. */
    private function encode(string $data): ?string
    {
        if ($this->encoding === 'php') {
            return $data === '' ? null : $data;
        }
        if ($data === '') {
            return null;
        }
        $vars = unserialize($data, ['allowed_classes' => false]);
        if (!is_array($vars)) {
            throw new EncodingException('gardenstate: the json encoding needs session.serialize_handler=php_serialize,'
                . ' and the session data is not in that format: do not change the serialize handler after'
                . ' creating the SessionHandler');
        }
        if ($vars === []) {
            return null;
        }
        self::checkPlain($vars, '$_SESSION');
        try {
            return json_encode((object)$vars, JSON_THROW_ON_ERROR | JSON_PRESERVE_ZERO_FRACTION
                | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        } catch (\JsonException $e) {
            throw new EncodingException('gardenstate: the session cannot be stored as JSON (' . $e->getMessage()
                . '): store UTF-8 text (base64 for binary data), or use \'encoding\' => \'php\'', 0, $e);
        }
    }

    private static function checkPlain(array $a, string $path): void
    {
        foreach ($a as $k => $v) {
            if (is_array($v)) {
                self::checkPlain($v, $path . '[' . var_export($k, true) . ']');
            } elseif (is_object($v)) {
                $class = $v instanceof \__PHP_Incomplete_Class ? ((array)$v)['__PHP_Incomplete_Class_Name'] : get_class($v);
                throw new EncodingException("gardenstate: {$path}[" . var_export($k, true) . "] is an object of class $class:"
                    . ' the json encoding stores arrays, strings, numbers, booleans and null (what every runtime'
                    . ' reads); store plain data, or use \'encoding\' => \'php\' for PHP-only sessions');
            }
        }
    }
}
