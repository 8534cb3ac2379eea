<?php
// Store: one open gardenstate segment, over the C ABI (include/gardenstate.h) through FFI.
//
// Keys and values are PHP strings (bytes). Every failure is an exception of
// Exceptions.php naming its cause, with the library's message (what was expected, what was
// found, what to do) read by gds_last_error_message() right after the failing call; no
// call ends the worker with a fatal error. Outcomes are return values: a missing key is
// null or false, never an exception.
//
// A Store holds a gds_store handle: close() (or the end of the request, which destroys the
// object) gives back the mapping and the client slot this process took in the segment.
declare(strict_types=1);

namespace Gardenstate;

final class Store
{
    private const OPTION_KEYS = ['capacity_bytes', 'max_entries', 'max_value', 'feed_len', 'max_key',
        'max_clients', 'group', 'evict'];

    /** @var \FFI\CData|null the gds_store* (null once closed) */
    private ?\FFI\CData $h;
    private \FFI $ffi;
    // Output parameters, made once per Store and reused by every call (PHP runs one call at
    // a time; FFI::new parses its type string on each use, which would cost more than the
    // call). Each call reads them only after the library returned the status that writes them.
    private \FFI\CData $buf;
    private \FFI\CData $len;
    private \FFI\CData $meta;
    private \FFI\CData $lockInfo;
    private \FFI\CData $ver;

    private function __construct(\FFI $ffi, \FFI\CData $h, private readonly string $name)
    {
        $this->ffi = $ffi;
        $this->h = $h;
        $this->buf = $ffi->new('uint8_t*');
        $this->len = $ffi->new('size_t');
        $this->meta = $ffi->new('gds_meta');
        $this->lockInfo = $ffi->new('gds_lock_info');
        $this->ver = $ffi->new('uint64_t');
    }

    /**
     * Opens `name`, creating it if it does not exist (race-free: exactly one of many
     * concurrent openers creates it).
     *
     * $options: the creation options capacity_bytes, max_entries, max_value, feed_len,
     * max_key, max_clients (0 or absent: the library's default), group (bool: mode 0660, and
     * attach accepts another user's segment of this group), evict (bool); and library (the
     * path of libgardenstate.so, see Library). An existing segment is checked against the
     * options given only (the library's rule, gds_open): an option absent or 0 accepts the
     * segment's value, so with none given a segment of any shape is attached; one given with
     * another value is an IncompatibleException naming the option, both values and a way on
     * that keeps the sessions.
     */
    public static function open(string $name, array $options = []): self
    {
        [$ffi] = self::prepare($options);
        return self::make($ffi, 'gds_open', $name, self::options($ffi, $options));
    }

    /**
     * As open, with the handle this worker process keeps (gds_open_process): PHP frees what a
     * request made, but the library keeps the handle, and the next request of this process
     * gets the same one back (a getpid and a stat instead of mapping the segment, ~110 us).
     * A process forked from one that had it (a php-fpm child of a master that opened it)
     * opens its own, and a segment destroyed and recreated is opened anew. close() and the
     * end of the request leave it open. Use the Store within the request that got it.
     */
    public static function process(string $name, array $options = []): self
    {
        [$ffi] = self::prepare($options);
        return self::make($ffi, 'gds_open_process', $name, self::options($ffi, $options));
    }

    /** Creates `name` (SegmentExistsException if it exists) with $options (as open). */
    public static function create(string $name, array $options = []): self
    {
        [$ffi] = self::prepare($options);
        return self::make($ffi, 'gds_create', $name, self::options($ffi, $options));
    }

    /** Attaches to the existing segment `name` (NoSegmentException if there is none). */
    public static function attach(string $name, array $options = []): self
    {
        [$ffi] = self::prepare($options);
        return self::make($ffi, !empty($options['group']) ? 'gds_attach_group' : 'gds_attach', $name, null);
    }

    /** Removes the segment `name`; true if it existed. Processes that have it open keep it. */
    public static function destroy(string $name, array $options = []): bool
    {
        [$ffi] = self::prepare($options);
        $st = $ffi->gds_destroy($name);
        if ($st === Abi::OK || $st === Abi::NOT_FOUND) {
            return $st === Abi::OK;
        }
        throw self::error($ffi, $st, "destroy segment '$name'");
    }

    /** The directory segments live in: /dev/shm, or $GARDENSTATE_SHM_DIR (read once per process). */
    public static function shmDir(array $options = []): string
    {
        static $dir = null;
        if ($dir === null) {
            [$ffi] = self::prepare($options);
            $p = $ffi->new('char*');
            $st = $ffi->gds_shm_dir(\FFI::addr($p));
            if ($st !== Abi::OK) {
                throw self::error($ffi, $st, 'shm_dir');
            }
            try {
                $dir = \FFI::string($p);
            } finally {
                $ffi->gds_buffer_free($p);
            }
        }
        return $dir;
    }

    public function name(): string
    {
        return $this->name;
    }

    /** The value of `key`, or null if it is absent or expired (extends a sliding deadline). */
    public function get(string $key): ?string
    {
        $ffi = $this->ffi;
        [$buf, $len] = [$this->buf, $this->len];
        $st = $ffi->gds_get_alloc($this->handle(), $key, strlen($key), \FFI::addr($buf), \FFI::addr($len), \FFI::addr($this->meta));
        if ($st === Abi::NOT_FOUND) {
            return null;
        }
        if ($st !== Abi::OK) {
            throw self::error($ffi, $st, 'get');
        }
        return $this->take($buf, $len->cdata);
    }

    /** Whether `key` is present (extends a sliding deadline, as a read). */
    public function exists(string $key): bool
    {
        $st = $this->ffi->gds_get_meta($this->handle(), $key, strlen($key), \FFI::addr($this->meta));
        if ($st === Abi::NOT_FOUND) {
            return false;
        }
        if ($st !== Abi::OK) {
            throw self::error($this->ffi, $st, 'exists');
        }
        return true;
    }

    /**
     * Stores `value` under `key`, replacing any value and dropping any lock; returns the new
     * version. $ttlMs null: never expires; else it expires $ttlMs after this write, or after
     * the last access if $sliding.
     */
    public function set(string $key, string $value, ?int $ttlMs = null, bool $sliding = false): int
    {
        return $this->write('gds_set', $key, $value, $ttlMs, $sliding);
    }

    /** As set, only if `key` is absent: false (and nothing written) if it is present. */
    public function add(string $key, string $value, ?int $ttlMs = null, bool $sliding = false): bool
    {
        try {
            $this->write('gds_add', $key, $value, $ttlMs, $sliding);
            return true;
        } catch (GardenstateException $e) {
            if ($e->getCode() === Abi::ERR_EXISTS) {
                return false;
            }
            throw $e;
        }
    }

    /** Removes `key`; true if a live entry was removed. */
    public function delete(string $key): bool
    {
        $st = $this->ffi->gds_delete($this->handle(), $key, strlen($key));
        if ($st === Abi::OK || $st === Abi::NOT_FOUND) {
            return $st === Abi::OK;
        }
        throw self::error($this->ffi, $st, 'delete');
    }

    /**
     * Takes the session lock of `key` and reads it, never waiting: returns
     * ['value' => string, 'lock_id' => int, 'took_over' => bool], or null if the key is
     * absent. A lock held by a process that died is taken over at once, one older than
     * $takeoverAfterMs too (null: never by age). LockedException (with the holder's lock id
     * and age) if another live holder has it.
     */
    public function lock(string $key, ?int $takeoverAfterMs = null): ?array
    {
        $ffi = $this->ffi;
        [$buf, $len, $info] = [$this->buf, $this->len, $this->lockInfo];
        $st = $ffi->gds_lock($this->handle(), $key, strlen($key), $takeoverAfterMs ?? PHP_INT_MAX,
            \FFI::addr($buf), \FFI::addr($len), \FFI::addr($this->meta), \FFI::addr($info));
        if ($st === Abi::OK) {
            return ['value' => $this->take($buf, $len->cdata), 'lock_id' => $info->lock_id,
                'took_over' => $info->took_over !== 0];
        }
        if ($st === Abi::NOT_FOUND) {
            return null;
        }
        if ($st === Abi::ERR_LOCKED) {
            throw new LockedException("gardenstate: lock: held by lock id {$info->lock_id} for {$info->age_ms} ms",
                $info->lock_id, $info->age_ms);
        }
        throw self::error($ffi, $st, 'lock');
    }

    /** Releases the lock `lockId` on `key`, keeping the value; false if the key is gone.
     *  LockLostException if the lock was taken over (or the entry is not locked). */
    public function unlock(string $key, int $lockId): bool
    {
        $st = $this->ffi->gds_unlock($this->handle(), $key, strlen($key), $lockId);
        if ($st === Abi::OK || $st === Abi::NOT_FOUND) {
            return $st === Abi::OK;
        }
        throw self::error($this->ffi, $st, 'unlock');
    }

    /** Stores `value` and releases the lock in one step; returns the new version, or null if
     *  the entry expired or was deleted meanwhile (nothing written). LockLostException if the
     *  lock was taken over (nothing written). */
    public function setAndUnlock(string $key, int $lockId, string $value, ?int $ttlMs = null, bool $sliding = false): ?int
    {
        $ffi = $this->ffi;
        [$kind, $ttl] = self::expiry($ttlMs, $sliding);
        $ver = $this->ver;
        $st = $ffi->gds_set_and_unlock($this->handle(), $key, strlen($key), $lockId, $value, strlen($value),
            $kind, $ttl, \FFI::addr($ver));
        if ($st === Abi::OK) {
            return $ver->cdata;
        }
        if ($st === Abi::NOT_FOUND) {
            return null;
        }
        throw self::error($ffi, $st, 'set_and_unlock');
    }

    /** Removes expired entries (up to $budget index slots); returns the number removed. */
    public function sweep(int $budget = 65536): int
    {
        $r = $this->ffi->new('gds_sweep_report');
        $r->struct_size = \FFI::sizeof($r);
        $st = $this->ffi->gds_sweep($this->handle(), $budget, \FFI::addr($r));
        if ($st !== Abi::OK) {
            throw self::error($this->ffi, $st, 'sweep');
        }
        return $r->expired;
    }

    /** The segment's fixed shape (gds_info) as an array. */
    public function info(): array
    {
        $i = $this->ffi->new('gds_info');
        $i->struct_size = \FFI::sizeof($i);
        $st = $this->ffi->gds_get_info($this->handle(), \FFI::addr($i));
        if ($st !== Abi::OK) {
            throw self::error($this->ffi, $st, 'info');
        }
        $out = [];
        foreach (['segment_bytes', 'heap_bytes', 'page_size', 'max_entries', 'index_slots', 'max_key',
                     'max_value', 'max_clients', 'feed_len', 'dataset_id', 'flags'] as $f) {
            $out[$f] = $i->$f;
        }
        return $out;
    }

    /**
     * Where the segment stands in its replication history (gds_replication_state): ['epoch',
     * 'role' (Abi::ROLE_*), 'role_name' ('primary', 'standby', 'fenced', 'lease_lapsed'),
     * 'changes', 'writable']. A few atomic loads: cheap enough for every request. Only a
     * primary takes writes (the others throw ReadOnlyException: answer 503 with Retry-After);
     * 'changes' grows on every role change and epoch raise, so comparing it with the value
     * seen before tells that a failover happened.
     */
    public function replicationState(): array
    {
        $r = $this->ffi->new('gds_replication_state');
        $r->struct_size = \FFI::sizeof($r);
        $st = $this->ffi->gds_get_replication_state($this->handle(), \FFI::addr($r));
        if ($st !== Abi::OK) {
            throw self::error($this->ffi, $st, 'replication state');
        }
        $names = [Abi::ROLE_PRIMARY => 'primary', Abi::ROLE_STANDBY => 'standby', Abi::ROLE_FENCED => 'fenced',
            Abi::ROLE_LEASE_LAPSED => 'lease_lapsed'];
        return ['epoch' => $r->epoch, 'role' => $r->role, 'role_name' => $names[$r->role] ?? 'unknown',
            'changes' => $r->changes, 'writable' => $r->role === Abi::ROLE_PRIMARY];
    }

    /** Closes the handle (the segment and its entries stay). Idempotent. */
    public function close(): void
    {
        if ($this->h !== null) {
            $h = $this->h;
            $this->h = null;
            $this->ffi->gds_close($h);
        }
    }

    public function __destruct()
    {
        $this->close();
    }

    public function __clone()
    {
        $this->h = null; // the copy must not close the original's handle when it is destroyed
        throw new \LogicException('gardenstate: a Store cannot be cloned (two objects would close one handle): share it');
    }

    public function __serialize(): array
    {
        throw new \LogicException('gardenstate: a Store cannot be serialized: open the store where it is used');
    }

    private function handle(): \FFI\CData
    {
        return $this->h ?? throw new GardenstateException("gardenstate: store '{$this->name}' is closed");
    }

    private function write(string $fn, string $key, string $value, ?int $ttlMs, bool $sliding): int
    {
        [$kind, $ttl] = self::expiry($ttlMs, $sliding);
        $ver = $this->ver;
        $st = $this->ffi->$fn($this->handle(), $key, strlen($key), $value, strlen($value), $kind, $ttl, \FFI::addr($ver));
        if ($st !== Abi::OK) {
            throw self::error($this->ffi, $st, substr($fn, 4));
        }
        return $ver->cdata;
    }

    /** Copies a library buffer into a PHP string and frees it. */
    private function take(\FFI\CData $buf, int $len): string
    {
        try {
            return $len === 0 ? '' : \FFI::string($buf, $len);
        } finally {
            $this->ffi->gds_buffer_free($buf);
        }
    }

    private static function expiry(?int $ttlMs, bool $sliding): array
    {
        if ($ttlMs === null) {
            return [Abi::EXPIRY_NEVER, 0];
        }
        if ($ttlMs < 1) {
            throw new \InvalidArgumentException("gardenstate: a TTL is at least 1 ms, got $ttlMs (null: never expires)");
        }
        return [$sliding ? Abi::EXPIRY_SLIDING : Abi::EXPIRY_AFTER, $ttlMs];
    }

    /** @return array{0: \FFI, 1: bool} the library, and whether a creation option is given */
    private static function prepare(array $options): array
    {
        $unknown = array_diff(array_keys($options), [...self::OPTION_KEYS, 'library']);
        if ($unknown) {
            throw new \InvalidArgumentException('gardenstate: unknown store option(s) ' . implode(', ', $unknown)
                . '; known: ' . implode(', ', [...self::OPTION_KEYS, 'library']));
        }
        return [Library::ffi($options['library'] ?? null)];
    }

    private static function options(\FFI $ffi, array $options): \FFI\CData
    {
        $o = $ffi->new('gds_options');
        $o->struct_size = \FFI::sizeof($o);
        foreach (['capacity_bytes', 'max_entries', 'max_value', 'feed_len', 'max_key', 'max_clients'] as $k) {
            $v = $options[$k] ?? 0;
            if (!is_int($v) || $v < 0) {
                throw new \InvalidArgumentException("gardenstate: option $k must be an int >= 0 (0: the default), got "
                    . var_export($v, true));
            }
            $o->$k = $v;
        }
        $o->mode = !empty($options['group']) ? 0o660 : 0;
        // evict given (true or false) is checked against an existing segment; absent, it is not.
        $o->flags = (!empty($options['evict']) ? Abi::OPTION_EVICT : 0)
            | (array_key_exists('evict', $options) ? Abi::OPTION_EVICT_GIVEN : 0);
        return $o;
    }

    private static function make(\FFI $ffi, string $fn, string $name, ?\FFI\CData $opts): self
    {
        $h = $ffi->new('gds_store*');
        $st = $opts === null ? $ffi->$fn($name, \FFI::addr($h)) : $ffi->$fn($name, \FFI::addr($opts), \FFI::addr($h));
        if ($st !== Abi::OK) {
            throw self::error($ffi, $st, substr($fn, 4) . " segment '$name'");
        }
        return new self($ffi, $h, $name);
    }

    /** The exception for status $st of the call just made (same thread: the message is fresh). */
    private static function error(\FFI $ffi, int $st, string $what): GardenstateException
    {
        $detail = $st >= 10 ? $ffi->gds_last_error_message() : '';
        $msg = "gardenstate: $what: " . $ffi->gds_strerror($st) . ($detail !== '' ? ": $detail" : '');
        return GardenstateException::forStatus($st, $msg);
    }
}
