using System.Diagnostics;
using Tibet.Core.Interop;

namespace Tibet.Core.Files;

/// <summary>
/// Empties the page cache of one file, and waits until it is empty.
/// </summary>
/// <remarks>
/// <para>One <c>POSIX_FADV_DONTNEED</c> is not enough. The kernel skips pages that are
/// locked for I/O, and a readahead started by the program's own buffered read of the
/// header (8 MiB on a disk whose <c>read_ahead_kb</c> is 8192, more after
/// <c>POSIX_FADV_SEQUENTIAL</c>), or by <c>readahead(2)</c> or <c>POSIX_FADV_WILLNEED</c>,
/// is exactly that: pages still under I/O when the advice runs stay cached, in plaintext,
/// after it. So the drop is repeated, with short waits for the I/O to end, until the
/// kernel reports no cached page (<c>cachestat(2)</c>, Linux 6.5; else <c>mincore</c> on a
/// map of tibet's own), or until a deadline.</para>
/// <para>What can outlive the deadline is a page the kernel will not drop at all: one
/// that another process has mapped, or one still being written back. The caller reports
/// such pages; it never claims the cache is clean when it is not.</para>
/// </remarks>
public static unsafe class PageCacheDrop
{
    /// <summary>How long a drop waits for readahead and writeback to end. Readahead of a
    /// few MiB ends in milliseconds on any disk; the deadline only bounds the case where a
    /// page cannot be dropped.</summary>
    public static readonly TimeSpan DefaultDeadline = TimeSpan.FromSeconds(2);

    /// <summary>Drops every cached page of the file open as <paramref name="fd"/> and
    /// waits for in-flight reads to end. Returns the pages still cached at the deadline:
    /// 0 when the cache holds nothing of the file, -1 when it cannot be counted.</summary>
    public static long DropAndWait(int fd, TimeSpan deadline)
    {
        var clock = Stopwatch.StartNew();
        int pauseMicroseconds = 200;
        while (true)
        {
            Libc.posix_fadvise(fd, 0, 0, Libc.POSIX_FADV_DONTNEED);
            long cached = CachedPages(fd);
            if (cached <= 0 || clock.Elapsed >= deadline)
                return cached;
            // Pages under I/O: let the read finish, then drop again.
            Thread.Sleep(TimeSpan.FromMicroseconds(pauseMicroseconds));
            pauseMicroseconds = Math.Min(pauseMicroseconds * 2, 20_000);
        }
    }

    /// <summary>The file's pages in the page cache, or -1 if the kernel cannot tell.</summary>
    public static long CachedPages(int fd)
    {
        CachestatRange range = default; // offset 0, length 0: the whole file
        Cachestat stat = default;
        long result = Libc.syscall(Libc.SYS_cachestat, fd, (long)&range, (long)&stat, 0);
        if (result == 0)
            return (long)stat.Cached;
        return CachedPagesByMincore(fd);
    }

    /// <summary>Before Linux 6.5: map the file (a map of tibet's own, which the interposer
    /// forwards to the kernel) and ask mincore which of its pages are in memory.</summary>
    private static long CachedPagesByMincore(int fd)
    {
        Libc.Stat st;
        if (Libc.fstat(fd, &st) != 0 || st.st_size <= 0)
            return st.st_size == 0 ? 0 : -1;
        const int PageSize = 4096;
        long pages = (st.st_size + PageSize - 1) / PageSize;
        nint map = Libc.mmap(0, (nuint)st.st_size, Libc.PROT_READ, Libc.MAP_SHARED, fd, 0);
        if (map == Libc.MAP_FAILED)
            return -1;
        try
        {
            long cached = 0;
            byte* vector = stackalloc byte[256];
            for (long first = 0; first < pages; first += 256)
            {
                long count = Math.Min(256, pages - first);
                if (Libc.mincore(map + (nint)(first * PageSize), (nuint)(count * PageSize), vector) != 0)
                    return -1;
                for (int i = 0; i < count; i++)
                    cached += vector[i] & 1;
            }
            return cached;
        }
        finally
        {
            Libc.munmap(map, (nuint)st.st_size);
        }
    }

    /// <summary>struct cachestat_range (include/uapi/linux/mman.h).</summary>
    private struct CachestatRange
    {
        public ulong Offset;
        public ulong Length;
    }

    /// <summary>struct cachestat (include/uapi/linux/mman.h).</summary>
    private struct Cachestat
    {
        public ulong Cached;
        public ulong Dirty;
        public ulong Writeback;
        public ulong Evicted;
        public ulong RecentlyEvicted;
    }
}
