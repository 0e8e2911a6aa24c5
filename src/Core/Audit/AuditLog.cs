using Tibet.Core.Interop;

namespace Tibet.Core.Audit;

/// <summary>
/// Appends decisions to a hash-chained audit log ("TIBET tokens"): one JSON line per
/// decision, each carrying the SHA-256 of the line before it, so that editing, inserting,
/// reordering or removing lines breaks the chain (see <see cref="AuditVerifier"/>).
/// </summary>
/// <remarks>
/// <para>Safe for any number of threads and processes at once: an append opens the log
/// with O_APPEND, takes flock(LOCK_EX) (held only for the append: reading the last line,
/// then one write(2) of the whole new line and its fsync), and closes it. A lock held
/// elsewhere for longer than <see cref="LockTimeout"/> fails the append. Readers take LOCK_SH briefly,
/// so they never see half a line. A write cut short (disk full) is undone with ftruncate
/// before the lock is released, so the log never keeps a torn line.</para>
/// <para>The log is created with mode 0600 and missing directories with 0700. Only a
/// regular file is accepted (opened with O_NOFOLLOW, then checked with fstat): a symbolic
/// link, /dev/null or a FIFO fails the append, and so does a record that cannot be made
/// durable with fsync. Callers that grant access keep it dead when an append fails.</para>
/// </remarks>
public sealed class AuditLog
{
    private const uint FileMode = 0b110_000_000; // 0600

    /// <summary>Uses <paramref name="path"/>, or the default location (<see cref="AuditLogLocation"/>),
    /// waiting at most <paramref name="lockTimeout"/> (default <see cref="DefaultLockTimeout"/>) for its lock.</summary>
    /// <exception cref="AuditLogException">No path given and no default can be worked out.</exception>
    public AuditLog(string? path = null, TimeSpan? lockTimeout = null)
    {
        Path = AuditLogLocation.Resolve(path);
        LockTimeout = lockTimeout ?? DefaultLockTimeout;
    }

    /// <summary>How long an append waits for another process to release the log's lock by
    /// default. Each append holds it for one read, one write and one fsync: milliseconds.</summary>
    public static readonly TimeSpan DefaultLockTimeout = TimeSpan.FromSeconds(5);

    /// <summary>The log file.</summary>
    public string Path { get; }

    /// <summary>How long an append waits for another process to release the log's lock.</summary>
    public TimeSpan LockTimeout { get; }

    private static readonly TimeSpan LockPollInterval = TimeSpan.FromMilliseconds(10);

    /// <summary>
    /// Appends one record and returns its anchor (line number and hash), which the
    /// caller may keep to detect later truncation of the log.
    /// </summary>
    /// <exception cref="AuditLogException">The log cannot be opened or written, or its last
    /// line is damaged (then the chain cannot be continued; run <c>tibet audit verify</c>).</exception>
    public AuditAnchor Append(AuditEntry entry)
    {
        EnsureDirectory();
        int fd = OpenRegularFile();
        try
        {
            LockWithTimeout(fd);
            long size = Libc.lseek(fd, 0, Libc.SEEK_END);
            if (size < 0)
                throw Failure("measure", Libc.LastErrno, "Check that it is a regular file.");

            var (previousHash, previousSequence) = ReadLastLine(fd, size);
            // The time is taken under the lock, so that times follow the order of the lines.
            byte[] line = AuditRecordFormat.Write(previousSequence + 1, DateTime.UtcNow, Environment.ProcessId,
                entry.Program ?? Environment.ProcessPath ?? "unknown", entry.Identity?.ToString(), entry.Object,
                entry.Decision, entry.Reason, previousHash);
            AppendLine(fd, line, size);
            Persist(fd, size);
            return new AuditAnchor(previousSequence + 1, AuditChain.Hash(line));
        }
        finally
        {
            Libc.close(fd); // also releases the lock
        }
    }

    /// <summary>
    /// Opens (or creates) the log, refusing anything but a regular file reached without a
    /// symbolic link in its last component: /dev/null, a FIFO or a link to either would
    /// take the record and keep nothing, and a link can point the append anywhere the
    /// program may write.
    /// </summary>
    private unsafe int OpenRegularFile()
    {
        const string nameAnother = "Name a regular file with --audit-log or " + AuditLogLocation.EnvironmentVariable + ".";
        int fd = Libc.open(Path, Libc.O_RDWR | Libc.O_APPEND | Libc.O_CREAT | Libc.O_CLOEXEC
                                        | Libc.O_NOFOLLOW | Libc.O_NONBLOCK, FileMode);
        if (fd < 0)
        {
            int errno = Libc.LastErrno;
            if (errno == Libc.ELOOP)
                throw new AuditLogException($"The audit log '{Path}' is a symbolic link, and the log is only written to a regular file. {nameAnother}");
            throw Failure("open", errno, "Check the path and its permissions, or name another log with " + AuditLogLocation.EnvironmentVariable + ".");
        }
        fd = HighDescriptors.MoveAbove(fd);
        Libc.Stat status;
        if (Libc.fstat(fd, &status) != 0)
        {
            int errno = Libc.LastErrno;
            Libc.close(fd);
            throw Failure("examine", errno, "Check the file system.");
        }
        if ((status.st_mode & Libc.S_IFMT) != Libc.S_IFREG)
        {
            Libc.close(fd);
            throw new AuditLogException($"The audit log '{Path}' is {AuditNative.DescribeType(status.st_mode)}, not a regular file, so nothing written to it " +
                $"would be kept. {nameAnother}");
        }
        return fd;
    }

    /// <summary>
    /// Takes the exclusive lock, giving up after <see cref="LockTimeout"/>: a process that
    /// holds the lock and never lets go (stopped, or hostile) must not hang every program
    /// that opens a sealed model. flock has no timeout of its own, so the lock is polled
    /// with LOCK_NB.
    /// </summary>
    private void LockWithTimeout(int fd)
    {
        long deadline = Environment.TickCount64 + (long)LockTimeout.TotalMilliseconds;
        while (AuditNative.Lock(fd, Libc.LOCK_EX | Libc.LOCK_NB) < 0)
        {
            int errno = Libc.LastErrno;
            if (errno != Libc.EWOULDBLOCK)
                throw Failure("lock", errno, "The file system may not support flock; put the log on a local file system.");
            if (Environment.TickCount64 >= deadline)
                throw new AuditLogException($"Cannot lock the audit log '{Path}': another process has held its lock for more than " +
                    $"{LockTimeout.TotalSeconds:0.#} s. Find it with 'fuser {Path}' (a stopped or hung tibet?), or name another log with {AuditLogLocation.EnvironmentVariable}.");
            Thread.Sleep(LockPollInterval);
        }
    }

    /// <summary>Makes the new record durable before access is granted on its strength; a
    /// record that cannot be made durable is removed, and the append fails.</summary>
    private void Persist(int fd, long sizeBefore)
    {
        if (AuditNative.FsyncRetrying(fd) == 0)
            return;
        int errno = Libc.LastErrno;
        Libc.ftruncate(fd, sizeBefore);
        throw Failure("flush", errno, "The record could not be written to disk and was removed; check the file system (full, read-only, failing?).");
    }

    private void EnsureDirectory()
    {
        string? directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(Path));
        if (directory == null || Directory.Exists(directory))
            return;
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("The audit log needs Linux.");
        try
        {
            Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new AuditLogException($"Cannot create the directory '{directory}' for the audit log: {e.Message} " +
                $"Create it, or name another log with {AuditLogLocation.EnvironmentVariable}.", e);
        }
    }

    private (string Hash, long Sequence) ReadLastLine(int fd, long size)
    {
        if (size == 0)
            return (AuditChain.Genesis, 0);
        int window = (int)Math.Min(size, 4096);
        while (true)
        {
            var buffer = new byte[window];
            if (AuditNative.ReadAt(fd, buffer, size - window) != window)
                throw Failure("read", Libc.LastErrno, "Check the file system.");
            if (buffer[^1] != (byte)'\n')
                throw new AuditLogException($"The audit log '{Path}' ends in an incomplete line (a write was cut short, or the file was edited), " +
                    $"so the chain cannot be continued. Inspect it with 'tibet audit verify {Path}' and move it aside to start a new log.");
            int newline = buffer.AsSpan(0, window - 1).LastIndexOf((byte)'\n');
            if (newline >= 0 || window == size)
            {
                ReadOnlySpan<byte> last = buffer.AsSpan(newline + 1, window - 1 - (newline + 1));
                if (!AuditRecordFormat.TryParse(last, out var record, out string problem))
                    throw new AuditLogException($"The last line of the audit log '{Path}' is not a TIBET audit record ({problem}), " +
                        $"so the chain cannot be continued. Inspect it with 'tibet audit verify {Path}' and move it aside to start a new log.");
                return (AuditChain.Hash(last), record.Sequence);
            }
            if (window > AuditRecordFormat.MaxLineLength)
                throw new AuditLogException($"The last line of the audit log '{Path}' is longer than any record ({AuditRecordFormat.MaxLineLength} bytes). " +
                    $"Inspect it with 'tibet audit verify {Path}' and move it aside to start a new log.");
            window = (int)Math.Min(size, Math.Min(4L * window, AuditRecordFormat.MaxLineLength + 2));
        }
    }

    private unsafe void AppendLine(int fd, byte[] line, long sizeBefore)
    {
        var record = new byte[line.Length + 1];
        line.CopyTo(record, 0);
        record[^1] = (byte)'\n';
        nint written;
        fixed (byte* p = record)
        {
            // One write(2) per line: with O_APPEND and the lock held, it lands whole at the end.
            while ((written = Libc.write(fd, p, (nuint)record.Length)) < 0 && Libc.LastErrno == Libc.EINTR)
            {
            }
        }
        if (written == record.Length)
            return;
        int errno = Libc.LastErrno;
        if (written > 0)
            Libc.ftruncate(fd, sizeBefore);
        throw written < 0
            ? Failure("append to", errno, "Free space on its file system, or check its permissions.")
            : new AuditLogException($"Cannot append to the audit log '{Path}': only {written} of {record.Length} bytes could be written " +
                "(the file system is full?); the partial line was removed. Free space and try again.");
    }

    private AuditLogException Failure(string action, int errno, string advice) =>
        new($"Cannot {action} the audit log '{Path}': {Libc.ErrorMessage(errno)}. {advice}");
}
