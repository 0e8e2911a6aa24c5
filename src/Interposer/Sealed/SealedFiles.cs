using System.Text;
using Microsoft.Win32.SafeHandles;
using Tibet.Core.Audit;
using Tibet.Core.Interop;
using Tibet.Core.Sealing;
using Tibet.Interposer.Native;

namespace Tibet.Interposer.Sealed;

/// <summary>
/// Sealed GGUF models in this process: which files are sealed, what this process's
/// identity and claim may see of each, and the descriptors through which the program
/// reads them.
/// </summary>
/// <remarks>
/// <para>The access decision (<see cref="SealedModel.Decide"/>) is made once per file, the
/// first time the program opens or maps it: one line on stderr when it is dead material
/// (or always with --verbose), and one audit record either way. If the audit record
/// cannot be written, the model stays dead: no access without a trace.</para>
/// <para>Calls arrive on program threads through the shim and serialise on one lock,
/// except reads, which run concurrently (each view guards its own scratch buffer).</para>
/// </remarks>
internal sealed unsafe class SealedFiles
{
    private const int SniffBytes = 1 << 20;

    private readonly Lock _lock = new();
    private readonly Dictionary<FileKey, SealedFileAccess?> _byFile = [];
    private readonly Dictionary<int, SealedFileAccess> _byDescriptor = [];
    private readonly ProcessIdentity _identity;
    private readonly string? _auditLogPath;
    private readonly int _verbosity;
    private readonly int _engineUffd;

    /// <param name="engineUffd">The userfaultfd of the engine that serves model maps: the
    /// custodian installs a live model's pages through it (-1: none; it then decrypts them
    /// through the session's window).</param>
    public SealedFiles(ProcessIdentity identity, InterposerConfig config, int engineUffd = -1)
    {
        _identity = identity;
        _auditLogPath = config.AuditLogPath;
        _verbosity = config.Verbosity;
        _engineUffd = engineUffd;
    }

    /// <summary>The sealed model open as <paramref name="fd"/>, decided on first sight;
    /// null when the file is not a sealed model (a plain GGUF, or anything else).</summary>
    public SealedFileAccess? Classify(int fd)
    {
        if (!TryGetKey(fd, out FileKey key))
            return null;
        lock (_lock)
        {
            if (!_byFile.TryGetValue(key, out SealedFileAccess? access))
                _byFile[key] = access = Decide(fd, key);
            return access;
        }
    }

    /// <summary>The program opened <paramref name="fd"/> read-only. True when it is a sealed
    /// model, whose reads must from now on come through <see cref="Read"/>.</summary>
    public bool Opened(int fd)
    {
        SealedFileAccess? access = Classify(fd);
        if (access == null)
            return false;
        lock (_lock)
            _byDescriptor[fd] = access;
        return true;
    }

    public void Closed(int fd)
    {
        lock (_lock)
            _byDescriptor.Remove(fd);
    }

    /// <summary>
    /// read(2), pread(2) or fread(3) of a descriptor the shim marked as a sealed model:
    /// the bytes the program may see, or a negative errno. At the file position (and
    /// advancing it) when <paramref name="atPosition"/>, else at <paramref name="offset"/>.
    /// A descriptor that no longer names the file it named when opened (dup2 over it) is
    /// read as it is.
    /// </summary>
    public long Read(int fd, byte* buffer, long count, long offset, bool atPosition)
    {
        SealedFileAccess? access;
        lock (_lock)
            _byDescriptor.TryGetValue(fd, out access);
        if (access == null || !TryGetKey(fd, out FileKey key) || key != access.Key)
        {
            Closed(fd);
            nint raw = atPosition ? Libc.read(fd, buffer, (nuint)count) : Libc.pread(fd, buffer, (nuint)count, offset);
            return raw < 0 ? -Libc.LastErrno : raw;
        }

        long position = atPosition ? Libc.lseek(fd, 0, Libc.SEEK_CUR) : offset;
        if (position < 0)
            return -Libc.LastErrno;
        bool referenced = false;
        long n;
        try
        {
            access.Source.DangerousAddRef(ref referenced);
            n = access.View.Read((int)access.Source.DangerousGetHandle(), position, buffer, count);
        }
        finally
        {
            if (referenced)
                access.Source.DangerousRelease();
        }
        if (access.View.TamperedPages > 0)
            ReportTampering(access); // once per file
        if (atPosition && n > 0)
            Libc.lseek(fd, position + n, Libc.SEEK_SET);
        return n;
    }

    /// <summary>Reports, once per file, that pages of it failed authentication.</summary>
    public void ReportTampering(SealedFileAccess access)
    {
        if (Interlocked.Exchange(ref access.TamperingReported, 1) != 0)
            return;
        if (access.View.KeyHolderGone)
        {
            // Not the file's fault: the custodian that decrypts it has ended (killed?).
            string gone = $"CustodianGone: {access.View.TamperedPages} data page(s) could not be decrypted: the custodian, which keeps the identity and the model's key, has ended";
            Shim.WriteError($"tibet: '{access.Path}': {gone}. A map of such a page raises SIGBUS, a read of it fails with EIO. " +
                            "Run the program again under tibet-run.");
            TryAudit(access.Path, AuditDecision.Denied, gone, out _);
            return;
        }
        string reason = $"DataTampered: {access.View.TamperedPages} data page(s) failed AES-256-GCM authentication";
        Shim.WriteError($"tibet: '{access.Path}': {reason}; the file was altered or damaged. A map of such a page raises SIGBUS, " +
                                "a read of it fails with EIO. Get an intact copy of the sealed model.");
        TryAudit(access.Path, AuditDecision.Denied, reason, out _);
    }

    private SealedFileAccess? Decide(int fd, FileKey key)
    {
        string path = DescribeDescriptor(fd);
        int own = HighDescriptors.MoveAbove(Libc.open($"/proc/self/fd/{fd}", Libc.O_RDONLY | Libc.O_CLOEXEC));
        if (own < 0)
            return Refuse(path, key, null, "Unreadable", $"tibet cannot reopen it ({Libc.Describe(Libc.LastErrno)}), so it is served as zeros");
        var source = new SafeFileHandle(own, ownsHandle: true);
        // The model is parsed from tibet's own descriptor, and the view reads from it later.
        using var stream = new FileStream(new SafeFileHandle(own, ownsHandle: false), FileAccess.Read, bufferSize: 0);
        SealedModel model;
        try
        {
            model = SealedModel.Open(stream, path);
        }
        catch (SealedModelException e) when (e.Reason == SealAccessReason.NotSealed
                                             || (e.Reason == SealAccessReason.MalformedModel && !LooksSealed(own)))
        {
            source.Dispose();
            return null; // a plain GGUF model (or not one at all): the program reads it as it is
        }
        catch (Exception e) when (e is SealedModelException or IOException)
        {
            string reason = e is SealedModelException sealedError ? sealedError.Reason.ToString() : "Unreadable";
            return Refuse(path, key, source, reason, SealedModel.OneLine(e.Message));
        }

        using (model)
        {
            if (_identity.GrantToken != null)
                return DecideThroughCustodian(model, own, path, key, source);
            AccessDecision decision;
            try
            {
                decision = model.Decide(_identity.Identity, _identity.Claim, DateTimeOffset.UtcNow);
            }
            catch (IOException e)
            {
                return Refuse(path, key, source, "Unreadable", SealedModel.OneLine(e.Message));
            }
            string reason = $"{decision.Reason}: {decision.Message}" +
                            (decision.Reason == SealAccessReason.NoIdentity ? _identity.WithheldHint : "");
            if (!TryAudit(path, decision.IsLive ? AuditDecision.Granted : AuditDecision.Denied, reason, out string auditProblem))
            {
                decision.Dispose();
                Shim.WriteError($"tibet: '{path}' is served as dead material (zero pages): its access could not be recorded " +
                                        $"in the audit log ({auditProblem}). Fix the log or name a writable one with --audit-log.");
                return new SealedFileAccess(path, key, source, SealedFileView.For(model, key: null));
            }
            if (!decision.IsLive)
                Shim.WriteError($"tibet: '{path}' is dead material (zero pages) for this process: {reason}");
            else if (_verbosity > 0)
                Shim.WriteError($"tibet: '{path}' is live: {decision.Message}");
            // The view holds the live key for the rest of the process; the decision is not kept.
            return new SealedFileAccess(path, key, source, SealedFileView.For(model, decision.IsLive ? decision.Key : null));
        }
    }

    /// <summary>
    /// The decision, made by the custodian, which keeps the identity and the claim and
    /// writes the audit record: this process shows its grant and the model's descriptor,
    /// and gets the verdict and, when live, a page session: the custodian decrypts the
    /// model's pages for it, and the data key never enters this process.
    /// </summary>
    private SealedFileAccess DecideThroughCustodian(SealedModel model, int fd, string path, FileKey key, SafeFileHandle source)
    {
        if (!Tibet.Core.Custodian.CustodianClient.RequestSealedAccess(fd, _identity.GrantToken, _engineUffd,
                out int status, out SealAccessReason reason, out string message, out var pages, out string problem))
        {
            Shim.WriteError($"tibet: '{path}' is dead material (zero pages) for this process: the custodian, which keeps the identity, " +
                            $"cannot be reached ({problem}). It ends when tibet-run's program and every process of its tree have ended; " +
                            "a process that outlives them opens no sealed model.");
            return new SealedFileAccess(path, key, source, SealedFileView.For(model, key: null));
        }
        if (status == Tibet.Core.Custodian.SealedAccessAnswer.NotRecorded)
        {
            Shim.WriteError($"tibet: '{path}' is served as dead material (zero pages): its access could not be recorded " +
                            $"in the audit log ({message}). Fix the log or name a writable one with --audit-log.");
            return new SealedFileAccess(path, key, source, SealedFileView.For(model, key: null));
        }
        if (pages == null)
        {
            // Refused: the custodian did not decide (its message says why); else its verdict.
            string why = status == Tibet.Core.Custodian.SealedAccessAnswer.Refused ? message : $"{reason}: {message}";
            Shim.WriteError($"tibet: '{path}' is dead material (zero pages) for this process: {why}");
            return new SealedFileAccess(path, key, source, SealedFileView.For(model, key: null));
        }
        if (_verbosity > 0)
            Shim.WriteError($"tibet: '{path}' is live: {message}");
        // The view holds the session for the rest of the process.
        return new SealedFileAccess(path, key, source, SealedFileView.For(model, pages)) { KeyInCustodian = true };
    }

    private SealedFileAccess Refuse(string path, FileKey key, SafeFileHandle? source, string reason, string message)
    {
        Shim.WriteError($"tibet: '{path}' looks like a sealed model but cannot be opened as one ({reason}: {message}); " +
                                "every page of it reads as zeros and reads of it fail.");
        TryAudit(path, AuditDecision.Denied, $"{reason}: {message}", out _);
        return new SealedFileAccess(path, key, source ?? new SafeFileHandle(-1, ownsHandle: false), SealedFileView.Refused(key.Size));
    }

    private bool TryAudit(string path, AuditDecision decision, string reason, out string problem)
    {
        problem = "";
        try
        {
            new AuditLog(_auditLogPath).Append(new AuditEntry
            {
                Object = path,
                Decision = decision,
                Reason = reason,
                Identity = _identity.Fingerprint,
            });
            return true;
        }
        catch (AuditLogException e)
        {
            problem = e.Message;
            return false;
        }
    }

    /// <summary>A file whose header does not parse is still treated as sealed when its first
    /// MiB names a seal key: serving it raw would hand ciphertext to the program.</summary>
    private static bool LooksSealed(int fd)
    {
        byte[] head = new byte[SniffBytes];
        nint n;
        fixed (byte* p = head)
            n = Libc.pread(fd, p, SniffBytes, 0);
        return n > 0 && head.AsSpan(0, (int)n).IndexOf("tibet.seal."u8) >= 0;
    }

    private static bool TryGetKey(int fd, out FileKey key)
    {
        Libc.Stat status;
        if (Libc.fstat(fd, &status) != 0 || (status.st_mode & Libc.S_IFMT) != Libc.S_IFREG)
        {
            key = default;
            return false;
        }
        key = new FileKey(status.st_dev, status.st_ino, status.st_size, status.st_mtim_sec, status.st_mtim_nsec);
        return true;
    }

    private static string DescribeDescriptor(int fd)
    {
        byte[] target = new byte[4096];
        nint n;
        fixed (byte* p = target)
            n = Libc.readlink($"/proc/self/fd/{fd}", p, (nuint)target.Length);
        return n > 0 ? Encoding.UTF8.GetString(target, 0, (int)n) : $"descriptor {fd}";
    }
}
