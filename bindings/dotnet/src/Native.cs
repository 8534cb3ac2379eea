// P/Invoke declarations for include/gardenstate.h (GDS_ABI_VERSION 1). Every struct is
// blittable and mirrors the header field for field (fixed-width integers only, no bool).
using System;
using System.Runtime.InteropServices;

namespace Gardenstate
{
    [StructLayout(LayoutKind.Sequential)]
    internal struct GdsOptions
    {
        public ulong struct_size, capacity_bytes, max_entries, max_value, feed_len;
        public uint max_key, max_clients, mode, flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct GdsInfo
    {
        public ulong struct_size, segment_bytes, heap_bytes, page_size, max_entries, index_slots,
            max_key, max_value, max_clients, feed_len, dataset_id, flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct GdsMeta
    {
        public ulong version, value_len, ttl_left_ms, lock_id, lock_age_ms;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct GdsLockInfo
    {
        public ulong lock_id, age_ms;
        public uint took_over, reserved;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct GdsStats
    {
        public ulong struct_size, live_entries, bytes_used, bytes_free, hits, misses, sets, deletes,
            expirations, evictions, touches, locks, lock_contentions, lock_takeovers, dead_reclaims,
            sweeps, clients, feed_head;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct GdsSweepReport
    {
        public ulong struct_size, ran, examined, expired, dead_clients_reclaimed;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct GdsCheckReport
    {
        public ulong struct_size, entries, blocks_in_use, leaked_blocks, hidden_free_blocks,
            stale_free_bits, dead_clients, problem_count;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct GdsReplicationState
    {
        public ulong struct_size, epoch, changes;
        public uint role, reserved;
    }

    /// <summary>The gds_store* handle; closed with gds_close exactly once.</summary>
    internal sealed class StoreHandle : SafeHandle
    {
        public StoreHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        protected override bool ReleaseHandle()
        {
            Native.gds_close(handle);
            return true;
        }
    }

    internal static unsafe class Native
    {
        // The C library: libgardenstate.so, found by the dynamic loader (LD_LIBRARY_PATH, or
        // an installed copy; see README.md).
        const string Lib = "gardenstate";
        public const uint AbiVersion = 1; // GDS_ABI_VERSION of include/gardenstate.h

        public const int OK = 0, NOT_FOUND = 1;
        public const uint EXPIRY_NEVER = 0, EXPIRY_AFTER = 1, EXPIRY_SLIDING = 2;
        public const ulong TTL_NEVER = ulong.MaxValue;

        [DllImport(Lib)] public static extern uint gds_abi_version();
        [DllImport(Lib)] public static extern IntPtr gds_version();
        [DllImport(Lib)] public static extern IntPtr gds_strerror(int status);
        [DllImport(Lib)] public static extern IntPtr gds_last_error_message();
        [DllImport(Lib)] public static extern int gds_options_default(ref GdsOptions opts);
        [DllImport(Lib)] public static extern int gds_create(byte[] name, ref GdsOptions opts, out StoreHandle store);
        [DllImport(Lib)] public static extern int gds_open(byte[] name, ref GdsOptions opts, out StoreHandle store);
        [DllImport(Lib)] public static extern int gds_attach(byte[] name, out StoreHandle store);
        [DllImport(Lib)] public static extern int gds_attach_group(byte[] name, out StoreHandle store);
        [DllImport(Lib)] public static extern void gds_close(IntPtr store);
        [DllImport(Lib)] public static extern int gds_destroy(byte[] name);
        [DllImport(Lib)] public static extern int gds_get_info(StoreHandle store, ref GdsInfo info);
        [DllImport(Lib)] public static extern int gds_get_replication_state(StoreHandle store, ref GdsReplicationState state);
        [DllImport(Lib)] public static extern int gds_shm_dir(out IntPtr path);
        [DllImport(Lib)] public static extern int gds_get(StoreHandle store, byte* key, UIntPtr key_len,
            byte* buf, UIntPtr buf_len, out UIntPtr value_len, out GdsMeta meta);
        [DllImport(Lib)] public static extern int gds_get_meta(StoreHandle store, byte* key, UIntPtr key_len, out GdsMeta meta);
        [DllImport(Lib)] public static extern int gds_set(StoreHandle store, byte* key, UIntPtr key_len,
            byte* value, UIntPtr value_len, uint expiry, ulong ttl_ms, out ulong version);
        [DllImport(Lib)] public static extern int gds_add(StoreHandle store, byte* key, UIntPtr key_len,
            byte* value, UIntPtr value_len, uint expiry, ulong ttl_ms, out ulong version);
        [DllImport(Lib)] public static extern int gds_compare_and_set(StoreHandle store, byte* key, UIntPtr key_len,
            ulong expected, byte* value, UIntPtr value_len, uint expiry, ulong ttl_ms, out ulong version);
        [DllImport(Lib)] public static extern int gds_delete(StoreHandle store, byte* key, UIntPtr key_len);
        [DllImport(Lib)] public static extern int gds_touch(StoreHandle store, byte* key, UIntPtr key_len, uint expiry, ulong ttl_ms);
        [DllImport(Lib)] public static extern int gds_lock(StoreHandle store, byte* key, UIntPtr key_len, ulong takeover_after_ms,
            out IntPtr value, out UIntPtr value_len, out GdsMeta meta, out GdsLockInfo lockInfo);
        [DllImport(Lib)] public static extern int gds_lock_wait(StoreHandle store, byte* key, UIntPtr key_len, ulong takeover_after_ms,
            ulong timeout_ms, out IntPtr value, out UIntPtr value_len, out GdsMeta meta, out GdsLockInfo lockInfo);
        [DllImport(Lib)] public static extern int gds_unlock(StoreHandle store, byte* key, UIntPtr key_len, ulong lock_id);
        [DllImport(Lib)] public static extern int gds_set_and_unlock(StoreHandle store, byte* key, UIntPtr key_len, ulong lock_id,
            byte* value, UIntPtr value_len, uint expiry, ulong ttl_ms, out ulong version);
        [DllImport(Lib)] public static extern int gds_get_stats(StoreHandle store, ref GdsStats stats);
        [DllImport(Lib)] public static extern int gds_sweep(StoreHandle store, ulong budget, ref GdsSweepReport report);
        [DllImport(Lib)] public static extern int gds_check(StoreHandle store, ref GdsCheckReport report, out IntPtr problems);
        [DllImport(Lib)] public static extern void gds_buffer_free(IntPtr buf);
    }
}
