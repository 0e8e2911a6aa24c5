namespace Tibet.Core.Interop;

/// <summary>
/// Keeps tibet's own descriptors out of the program's way. Programs treat the low numbers
/// as theirs: they count on open() returning 3, list /proc/self/fd and expect only what
/// they opened (CPython's test_subprocess found tibet's 3, 4, 5 and 6 in a close_fds
/// child), or dup2 over a number they believe free. So every descriptor tibet holds inside
/// a program is close-on-exec and sits at <see cref="Floor"/> or above.
/// </summary>
/// <remarks>
/// <para>The floor is <see cref="PreferredFloor"/> (1000) when the soft RLIMIT_NOFILE
/// leaves at least <see cref="Headroom"/> numbers above it (the usual soft limit 1024 leaves
/// 24); under a lower limit it is the top <see cref="Headroom"/> numbers below the limit,
/// and never below 3. When no number at or above the floor is free, a descriptor stays
/// where the kernel put it, still close-on-exec: a program that runs with one low
/// descriptor of tibet's is better than one refused.</para>
/// <para>Nothing here allocates, so <see cref="MoveAbove"/> may run on the fault handler
/// thread (a forked child's userfaultfd arrives there).</para>
/// </remarks>
public static unsafe class HighDescriptors
{
    /// <summary>The lowest number tibet uses when the descriptor limit allows it.</summary>
    public const int PreferredFloor = 1000;

    /// <summary>Numbers kept free for tibet at the top of a low descriptor limit.</summary>
    public const int Headroom = 16;

    /// <summary>The lowest number tibet's descriptors take, from the current soft
    /// RLIMIT_NOFILE (see the remarks).</summary>
    public static int Floor
    {
        get
        {
            Libc.RLimit limit;
            if (Libc.getrlimit(Libc.RLIMIT_NOFILE, &limit) != 0 || limit.Current >= PreferredFloor + Headroom)
                return PreferredFloor;
            return (int)Math.Max(3, (long)limit.Current - Headroom);
        }
    }

    /// <summary>
    /// Moves a descriptor tibet just opened to <see cref="Floor"/> or above, close-on-exec,
    /// and closes the original. A negative <paramref name="fd"/> (a failed open) is returned
    /// as it is, with errno untouched, so that callers can check the open as before.
    /// </summary>
    public static int MoveAbove(int fd) => Move(fd, Libc.F_DUPFD_CLOEXEC);

    /// <summary>Like <see cref="MoveAbove"/>, but the copy is inherited across exec: for the
    /// one descriptor tibet-run deliberately hands to the program.</summary>
    public static int MoveAboveInheritable(int fd) => Move(fd, Libc.F_DUPFD);

    /// <summary>Whether <paramref name="fd"/> is open and close-on-exec.</summary>
    public static bool IsCloseOnExec(int fd) => Libc.fcntl(fd, Libc.F_GETFD, 0) is int flags && flags >= 0 && (flags & Libc.FD_CLOEXEC) != 0;

    private static int Move(int fd, int command)
    {
        if (fd < 0)
            return fd;
        int floor = Floor;
        if (fd >= floor)
        {
            if (command == Libc.F_DUPFD_CLOEXEC)
                Libc.fcntl(fd, Libc.F_SETFD, Libc.FD_CLOEXEC);
            return fd;
        }
        int high = Libc.fcntl(fd, command, floor);
        if (high < 0)
        {
            // No free number at or above the floor: keep the low one (see the remarks).
            if (command == Libc.F_DUPFD_CLOEXEC)
                Libc.fcntl(fd, Libc.F_SETFD, Libc.FD_CLOEXEC);
            return fd;
        }
        Libc.close(fd);
        return high;
    }

    /// <summary>
    /// Occupies every free number below <see cref="Floor"/> until disposed, so that
    /// whatever opens a descriptor meanwhile (the runtime's own /dev/urandom, a library
    /// being loaded, the engine's userfaultfds) gets a number at or above the floor. Only
    /// for the interposer's start, before the program runs: a program thread opening a
    /// file meanwhile would get a high number too.
    /// </summary>
    public static LowNumberReservation ReserveBelowFloor()
    {
        var held = new List<int>();
        int floor = Floor;
        int placeholder = Libc.open("/dev/null", Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (placeholder < 0)
            return new LowNumberReservation(held);
        if (placeholder >= floor)
        {
            Libc.close(placeholder);
            return new LowNumberReservation(held);
        }
        held.Add(placeholder);
        while (true)
        {
            // F_DUPFD takes the lowest free number at or above its argument, so an open
            // descriptor is never replaced (dup2 would close it).
            int fd = Libc.fcntl(placeholder, Libc.F_DUPFD_CLOEXEC, 0);
            if (fd < 0)
                break;
            if (fd >= floor)
            {
                Libc.close(fd);
                break;
            }
            held.Add(fd);
        }
        return new LowNumberReservation(held);
    }

    /// <summary>The placeholders <see cref="ReserveBelowFloor"/> holds; disposing closes them.</summary>
    public sealed class LowNumberReservation : IDisposable
    {
        private readonly List<int> _held;

        internal LowNumberReservation(List<int> held) => _held = held;

        /// <summary>How many numbers were reserved.</summary>
        public int Count => _held.Count;

        /// <summary>Frees the numbers again.</summary>
        public void Dispose()
        {
            foreach (int fd in _held)
                Libc.close(fd);
            _held.Clear();
        }
    }
}
