using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Storage;

namespace Tibet.Core.Files;

/// <summary>
/// Fills an arena with a snapshot of a file's contents, sealed page by page as it is
/// read, so that the file's plaintext is never mapped and never left in the kernel's
/// page cache.
/// </summary>
/// <remarks>
/// <para>The file is read through a descriptor of our own, opened from
/// <c>/proc/self/fd/N</c> with O_DIRECT: the data goes from the disk to a locked buffer
/// and bypasses the page cache. Reopening matters: O_DIRECT set on the program's own
/// descriptor would apply to the program's reads too (they share the open file
/// description) and break its unaligned <c>fread</c>s. Where the file system refuses
/// O_DIRECT the file is read normally. Either way the file's cached pages are dropped
/// (POSIX_FADV_DONTNEED) afterwards, which also drops what the program itself read,
/// such as a model's header.</para>
/// <para>Bytes past the end of the file read as zeros, as in the last page of a file
/// mapping.</para>
/// </remarks>
public static unsafe class FileSnapshot
{
    private const int PageSize = Userfaultfd.PageSize;
    private const int SliceBytes = 1 << 20;
    private const int PagesPerImport = 64; // the engine lock is held for one import call

    /// <summary>What an import read, and how many pages the filter found tampered.</summary>
    public readonly record struct Outcome(long BytesRead, bool BypassedPageCache, long TamperedPages);

    /// <summary>Reads <c>arena.Length</c> bytes of the file open as <paramref name="fd"/>,
    /// from <paramref name="offset"/> (page-aligned), into the untouched arena. With a
    /// <paramref name="filter"/>, each page is what the filter makes of it: kept, left
    /// as zeros, or poisoned (its readers get SIGBUS).</summary>
    /// <exception cref="IOException">The file cannot be reopened or read; the message
    /// names the file and the reason.</exception>
    public static Outcome ImportInto(Arena arena, int fd, long offset, IPageFilter? filter = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if ((offset & (PageSize - 1)) != 0)
            throw new ArgumentException("The file offset of a mapping is page-aligned.", nameof(offset));

        Libc.Stat status;
        if (Libc.fstat(fd, &status) != 0)
            throw new IOException($"fstat of descriptor {fd} failed: {Libc.Describe(Libc.LastErrno)}");
        long fileLength = status.st_size;

        int own = OpenPrivately(fd, out bool direct);
        nint buffer = 0;
        try
        {
            buffer = KernelMemory.Map(SliceBytes);
            Libc.mlock(buffer, SliceBytes);
            Libc.madvise(buffer, SliceBytes, Libc.MADV_DONTDUMP);
            long bytesRead = 0, tampered = 0;
            for (long position = 0; position < arena.Length; position += SliceBytes)
            {
                int slice = (int)Math.Min(SliceBytes, arena.Length - position);
                long available = Math.Clamp(fileLength - (offset + position), 0, slice);
                ReadExactly(own, (byte*)buffer, available, offset + position, direct, fd);
                Libc.memset((byte*)buffer + available, 0, (nuint)(slice - available));
                bytesRead += available;
                for (int done = 0; done < slice; done += PagesPerImport * PageSize)
                {
                    int length = Math.Min(PagesPerImport * PageSize, slice - done);
                    var pages = new Span<byte>((byte*)buffer + done, length);
                    long firstPage = (position + done) / PageSize;
                    if (filter == null)
                        arena.Import(firstPage, pages);
                    else
                        tampered += ImportFiltered(arena, firstPage, pages, offset + position + done, filter);
                }
            }
            return new Outcome(bytesRead, direct, tampered);
        }
        finally
        {
            if (buffer != 0)
            {
                Libc.memset((void*)buffer, 0, SliceBytes);
                KernelMemory.Unmap(buffer, SliceBytes);
            }
            Libc.posix_fadvise(own, 0, 0, Libc.POSIX_FADV_DONTNEED);
            Libc.close(own);
        }
    }

    /// <summary>Imports the runs of kept pages, poisons tampered ones and leaves zero
    /// pages untouched (they read as zeros); returns the tampered count.</summary>
    private static long ImportFiltered(Arena arena, long firstPage, Span<byte> pages, long fileOffset, IPageFilter filter)
    {
        long tampered = 0;
        int count = pages.Length / PageSize, runStart = 0;
        for (int i = 0; i <= count; i++)
        {
            PageVerdict verdict = i == count ? PageVerdict.Zero : filter.Filter(fileOffset + (long)i * PageSize, pages.Slice(i * PageSize, PageSize));
            if (verdict == PageVerdict.Keep)
                continue;
            if (i > runStart)
                arena.Import(firstPage + runStart, pages[(runStart * PageSize)..(i * PageSize)]);
            runStart = i + 1;
            if (verdict == PageVerdict.Tampered)
            {
                arena.ImportPoisoned(firstPage + i);
                tampered++;
            }
        }
        return tampered;
    }

    internal static int OpenPrivately(int fd, out bool direct)
    {
        string path = $"/proc/self/fd/{fd}";
        int own = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC | Libc.O_DIRECT);
        direct = own >= 0;
        if (own < 0 && Libc.LastErrno == Libc.EINVAL)
            own = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC); // no O_DIRECT on this file system
        if (own < 0)
            throw new IOException($"cannot reopen descriptor {fd} through {path}: {Libc.Describe(Libc.LastErrno)} (is /proc mounted?)");
        return own;
    }

    /// <summary>Reads <paramref name="count"/> bytes at <paramref name="offset"/>. O_DIRECT
    /// reads whole blocks, so the request is rounded up to a page (the buffer has room:
    /// slices are whole pages); only the end of the file makes it come back short.</summary>
    private static void ReadExactly(int own, byte* buffer, long count, long offset, bool direct, int programFd)
    {
        long done = 0;
        while (done < count)
        {
            long request = direct ? RoundUpToPage(count - done) : count - done;
            nint n = Libc.pread(own, buffer + done, (nuint)request, offset + done);
            if (n < 0 && Libc.LastErrno == Libc.EINTR)
                continue;
            if (n < 0)
                throw new IOException($"reading descriptor {programFd} at offset {offset + done} failed: {Libc.Describe(Libc.LastErrno)}");
            if (n == 0)
                throw new IOException($"descriptor {programFd} ended at offset {offset + done}, before the {offset + count} bytes it had when mapped: the file shrank while being read");
            done += n;
        }
    }

    private static long RoundUpToPage(long value) => (value + PageSize - 1) & ~(long)(PageSize - 1);
}
