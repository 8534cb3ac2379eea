<?php
// The exceptions of the binding: one class per cause a caller may want to catch apart, all
// under Gardenstate\GardenstateException. getCode() is the library's gds_status (0 for
// causes found in PHP before any call), and the message says what was expected, what was
// found and what to do.
declare(strict_types=1);

namespace Gardenstate;

/** Base class of every error of the binding. */
class GardenstateException extends \RuntimeException
{
    /** Maps a gds_status error code to the exception class that names its cause. */
    public static function forStatus(int $status, string $message): self
    {
        $class = match ($status) {
            Abi::ERR_NO_SEGMENT => NoSegmentException::class,
            Abi::ERR_INCOMPATIBLE => IncompatibleException::class,
            Abi::ERR_FULL_INDEX, Abi::ERR_FULL_HEAP, Abi::ERR_FULL_CLIENTS => FullException::class,
            Abi::ERR_VALUE_LENGTH => ValueTooLargeException::class,
            Abi::ERR_KEY_LENGTH => KeyLengthException::class,
            Abi::ERR_LOCK_MISMATCH => LockLostException::class,
            Abi::ERR_READ_ONLY => ReadOnlyException::class,
            Abi::ERR_PERMISSION, Abi::ERR_REFUSED => PermissionException::class,
            Abi::ERR_SEGMENT_EXISTS => SegmentExistsException::class,
            Abi::ERR_DESTROYED => DestroyedException::class,
            default => self::class,
        };
        return new $class($message, $status);
    }
}

/** libgardenstate cannot be loaded, is of another ABI, or FFI is disabled. */
class LibraryException extends GardenstateException {}

/** attach: no segment of that name exists. */
class NoSegmentException extends GardenstateException {}

/** create: a segment of that name exists already. */
class SegmentExistsException extends GardenstateException {}

/**
 * The segment was destroyed while this store was attached (`gardenstate destroy --force`):
 * nothing written to it would be read again. Open the store again (open creates or attaches
 * the segment now under the name).
 */
class DestroyedException extends GardenstateException {}

/** The segment was made by another layout or with other options than those given. */
class IncompatibleException extends GardenstateException {}

/** The segment is full: its index (max_entries), heap (capacity_bytes) or client slots. */
class FullException extends GardenstateException {}

/** A value over the segment's max_value. */
class ValueTooLargeException extends GardenstateException {}

/** A key empty or over the segment's max_key. */
class KeyLengthException extends GardenstateException {}

/** A session id that is not of the session id format (see README "Session ids"). */
class InvalidSessionIdException extends GardenstateException {}

/** A session value the configured encoding cannot store (json: objects, invalid UTF-8). */
class EncodingException extends GardenstateException {}

/** The session lock was taken over by another request: this request's write was dropped. */
class LockLostException extends GardenstateException {}

/** The segment is a standby replica (or fenced): write on the primary. */
class ReadOnlyException extends GardenstateException {}

/** The operating system, or the segment's owner check, refused access to the segment. */
class PermissionException extends GardenstateException {}

/** Store::lock: another lock id holds the entry. */
class LockedException extends GardenstateException
{
    public function __construct(string $message, public readonly int $holderLockId, public readonly int $ageMs)
    {
        parent::__construct($message, Abi::ERR_LOCKED);
    }
}
