using Tibet.Core.Interop;

namespace Tibet.Core.Custodian;

/// <summary>
/// A window shared by the custodian and a process it serves: a memfd mapped on both sides,
/// through which plaintext passes (pages taken out of a process, pages of a sealed model
/// decrypted for it). Locked and kept out of core dumps; whoever writes plaintext into it
/// wipes it after use.
/// </summary>
internal static class SharedWindow
{
    /// <summary>Creates and maps a window of <paramref name="pages"/> pages; its memfd
    /// (close-on-exec) is for the other side, to be closed once handed over. On failure
    /// nothing is left open, and <paramref name="memfd"/> is -1.</summary>
    public static nint Create(string name, int pages, out int memfd)
    {
        nuint length = (nuint)(pages * Paging.Userfaultfd.PageSize);
        memfd = Libc.memfd_create(name, Libc.MFD_CLOEXEC | Libc.MFD_ALLOW_SEALING);
        if (memfd < 0)
            throw new InvalidOperationException($"memfd_create failed: {Libc.Describe(Libc.LastErrno)}");
        // Sealed at its size: the other side could otherwise shrink it, and the custodian's
        // next access to the window would kill it with SIGBUS, and every process it serves.
        if (Libc.ftruncate(memfd, (long)length) != 0
            || Libc.fcntl(memfd, Libc.F_ADD_SEALS, Libc.F_SEAL_SHRINK | Libc.F_SEAL_GROW | Libc.F_SEAL_SEAL) != 0)
        {
            int errno = Libc.LastErrno;
            Libc.close(memfd);
            memfd = -1; // closed: a caller's clean-up must not close a number reused since
            throw new InvalidOperationException($"sizing and sealing the {name} window failed: {Libc.Describe(errno)}");
        }
        nint window = Map(memfd, length);
        if (window == Libc.MAP_FAILED)
        {
            int errno = Libc.LastErrno;
            Libc.close(memfd);
            memfd = -1;
            throw new InvalidOperationException($"mmap of the {name} window failed: {Libc.Describe(errno)}");
        }
        return window;
    }

    /// <summary>Maps the window <paramref name="memfd"/> (the other side's): the address,
    /// or MAP_FAILED with errno set.</summary>
    public static nint Map(int memfd, nuint length)
    {
        nint window = Libc.mmap(0, length, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, memfd, 0);
        if (window == Libc.MAP_FAILED)
            return window;
        Libc.madvise(window, length, Libc.MADV_DONTDUMP);
        // A forked child must not inherit plaintext in flight.
        Libc.madvise(window, length, Libc.MADV_DONTFORK);
        MemoryLocking.Lock(window, length);
        return window;
    }
}
