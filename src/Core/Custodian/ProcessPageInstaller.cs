using Tibet.Core.Files;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Sealing;
using Tibet.Core.Storage;

namespace Tibet.Core.Custodian;

/// <summary>
/// The custodian's side of installing a live sealed model's pages straight into the process
/// that maps it: the ciphertext is read from the model file (the process's own descriptor,
/// kept since the decision), decrypted in memory of the custodian's own, and installed in
/// the process with UFFDIO_COPY on its engine's userfaultfd, which wakes the threads
/// waiting on those pages.
/// </summary>
/// <remarks>
/// <para>Why: with the window alone, each page crossed the process three more times (its
/// ciphertext copied in, its plaintext copied out, the window wiped), and a 2 MiB range
/// was served in 16 round trips; llama.cpp at half budget ran at half the speed it had
/// with the key in the program. Installed from here, a page is read, decrypted and copied
/// once, as in the process's own engine, and its plaintext is never in shared memory.
/// (Pages the engine does not ask to be installed still come through the window: see
/// docs/threat-model.md.)</para>
/// <para>UFFDIO_COPY works on a userfaultfd of another process (UFFDIO_MOVE does not; see
/// AddressSpaceOps). The process's engine keeps the books: it asks for pages it holds as
/// absent under its lock, and reads its userfaultfd's events, so an install that meets an
/// event waiting to be read fails with EAGAIN, and the engine reads the event and serves
/// the rest itself.</para>
/// <para>One lane's buffer per lane (each lane has one thread); allocation-free and
/// malloc-free per request.</para>
/// </remarks>
internal sealed unsafe class ProcessPageInstaller : IDisposable
{
    /// <summary>Pages decrypted and installed at a time: threads waiting on a request's
    /// pages run again after their chunk, not after the whole request. (A first chunk of
    /// 1 or 4 pages, for the faulting thread's page, measured no faster with llama.cpp.)</summary>
    public const int ChunkPages = 32;

    /// <summary>Pages one request may ask for: a 2 MiB range of a model map.</summary>
    public const int MaxRequestPages = 512;

    private const int PageSize = SealFormat.PageSize;
    private const nuint ChunkBytes = ChunkPages * (nuint)PageSize;

    private readonly Userfaultfd _uffd;
    private readonly int _file;
    private readonly long _dataOffset;
    private readonly nint _buffers;
    private readonly nuint _buffersLength;

    /// <param name="uffd">The process's engine's userfaultfd (owned from now on).</param>
    /// <param name="file">The model file, open for reading (owned from now on).</param>
    /// <param name="dataOffset">Where the file's data section begins.</param>
    /// <param name="lanes">How many threads install at once, each with its own buffer.</param>
    public ProcessPageInstaller(int uffd, int file, long dataOffset, int lanes)
    {
        _uffd = Userfaultfd.Adopt(uffd);
        _file = HighDescriptors.MoveAbove(file);
        _dataOffset = dataOffset;
        _buffersLength = (nuint)lanes * ChunkBytes;
        try
        {
            _buffers = KernelMemory.Map(_buffersLength);
        }
        catch
        {
            _uffd.Dispose();
            Libc.close(_file);
            throw;
        }
        // Plaintext passes through here: out of swap, core dumps and forked children.
        MemoryLocking.Lock(_buffers, _buffersLength);
        Libc.madvise(_buffers, _buffersLength, Libc.MADV_DONTDUMP);
        Libc.madvise(_buffers, _buffersLength, Libc.MADV_DONTFORK);
        PositionalRead.Prepare(_file);
    }

    /// <summary>Whether <paramref name="fd"/> is a userfaultfd (what a process sends as its
    /// engine's; anything else is refused before it is used).</summary>
    public static bool IsUserfaultfd(int fd)
    {
        try
        {
            return new FileInfo($"/proc/self/fd/{fd}").LinkTarget == "anon_inode:[userfaultfd]";
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>
    /// Installs data pages [<paramref name="firstPage"/>, + <paramref name="count"/>) of the
    /// model at <paramref name="address"/> in the process, a chunk at a time, on lane
    /// <paramref name="lane"/>'s buffer. Returns how many pages, from the first on, are
    /// installed, and in <paramref name="errno"/> why not the next (see SealedPagesAnswer).
    /// </summary>
    public int Install(int lane, SealedModelKey key, long firstPage, int count, nint address, bool writeProtect, out int errno)
    {
        if (count <= 0 || count > MaxRequestPages || firstPage < 0 || firstPage > key.DataPages - count
            || address <= 0 || address % PageSize != 0)
        {
            errno = Libc.EINVAL;
            return 0;
        }
        byte* buffer = (byte*)_buffers + (nuint)lane * ChunkBytes;
        ulong mode = writeProtect ? UserfaultfdAbi.UFFDIO_COPY_MODE_WP : 0;
        int done = 0;
        errno = 0;
        while (done < count)
        {
            int chunk = Math.Min(count - done, ChunkPages);
            int bytes = chunk * PageSize;
            long read = PositionalRead.Fully(_file, buffer, bytes, _dataOffset + (firstPage + done) * PageSize);
            if (read != bytes)
            {
                Libc.memset(buffer, 0, (nuint)bytes);
                errno = Libc.EIO; // the data section was cut short, or the disk failed
                break;
            }
            int opened = key.OpenPages(firstPage + done, chunk, buffer);
            long copied = 0;
            int rc = opened > 0 ? _uffd.Copy(address + (nint)done * PageSize, (nint)buffer, (nuint)(opened * PageSize), mode, out copied) : 0;
            Libc.memset(buffer, 0, (nuint)bytes);
            int installed = (int)(copied / PageSize);
            done += installed;
            if (rc != 0 || installed < opened)
            {
                errno = rc != 0 ? rc : Libc.EAGAIN;
                break;
            }
            if (opened < chunk)
            {
                errno = Libc.EBADMSG; // the next page failed authentication: never installed
                break;
            }
        }
        return done;
    }

    public void Dispose()
    {
        Libc.memset((void*)_buffers, 0, _buffersLength);
        KernelMemory.Unmap(_buffers, _buffersLength);
        _uffd.Dispose();
        Libc.close(_file);
    }
}
