using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using Tibet.Core.Audit;
using Tibet.Core.Identity;
using Tibet.Core.Interop;
using Tibet.Core.Sealing;

namespace Tibet.Core.Custodian;

/// <summary>
/// The identity and claim tibet-run handed to the custodian, and the access decisions
/// made with them for the processes of the tree. A process that opens a sealed model
/// sends the model's descriptor and its grant token (<see cref="CustodianGrant"/>); the
/// custodian decides (<see cref="SealedModel.Decide(Identity.Identity?, Claim?, DateTimeOffset)"/>),
/// writes the audit record, and answers with the verdict and, when the model is live, a
/// page session (<see cref="SealedPageService"/>): the custodian installs the model's pages
/// into the process (when it sent its engine's userfaultfd), or the process sends
/// ciphertext and gets plaintext back. Neither the identity's X25519 secret nor the model's data key leaves
/// this process.
/// </summary>
/// <remarks>
/// The audit record is written here, by the process that decides: a program cannot skip
/// it, and a model whose decision cannot be recorded stays dead, as before.
/// </remarks>
internal sealed unsafe class IdentityCustody : IDisposable
{
    private readonly Identity.Identity _identity;
    private readonly Claim? _claim;
    private readonly byte[] _token;
    private readonly Action<string> _say;

    private IdentityCustody(Identity.Identity identity, Claim? claim, byte[] token, Action<string> say)
    {
        _identity = identity;
        _claim = claim;
        _token = token;
        _say = say;
    }

    /// <summary>Decisions answered so far (live or dead).</summary>
    public long Decisions => Interlocked.Read(ref _decisions);
    private long _decisions;

    /// <summary>
    /// Reads what tibet-run put in <paramref name="descriptor"/> (a memfd_secret: the grant
    /// token, then the identity hand-off) and closes it.
    /// </summary>
    /// <exception cref="IdentityException">It holds no token and hand-off.</exception>
    public static IdentityCustody Load(int descriptor, Action<string> say)
    {
        const string source = "the custodian's identity descriptor";
        try
        {
            Libc.Stat status;
            if (Libc.fstat(descriptor, &status) != 0 || status.st_size <= CustodianGrant.TokenSize
                || status.st_size > CustodianGrant.TokenSize + IdentityHandOff.MaxSize)
                throw new IdentityException(IdentityErrorKind.Malformed, $"{source} does not hold a grant token and an identity hand-off");
            // Mapped, not read: memfd_secret memory can only be mapped.
            nint map = Libc.mmap(0, (nuint)status.st_size, Libc.PROT_READ, Libc.MAP_SHARED, descriptor, 0);
            if (map == Libc.MAP_FAILED)
                throw new IdentityException(IdentityErrorKind.Malformed, $"{source} cannot be mapped ({Libc.Describe(Libc.LastErrno)})");
            try
            {
                var contents = new ReadOnlySpan<byte>((void*)map, (int)status.st_size);
                byte[] token = GC.AllocateArray<byte>(CustodianGrant.TokenSize, pinned: true);
                contents[..CustodianGrant.TokenSize].CopyTo(token);
                var (identity, claim) = IdentityHandOff.Open(contents[CustodianGrant.TokenSize..], source);
                return new IdentityCustody(identity, claim, token, say);
            }
            finally
            {
                Libc.munmap(map, (nuint)status.st_size);
            }
        }
        finally
        {
            Libc.close(descriptor);
        }
    }

    /// <summary>
    /// Answers one request: the token waits on <paramref name="reply"/>, the model is open
    /// as <paramref name="model"/>, and <paramref name="pid"/> asked (checked by the
    /// registry); <paramref name="uffd"/>, when not -1, is the userfaultfd of the process's
    /// engine, into which a live session installs pages. Closes every descriptor. Never
    /// throws: whatever fails, the process gets an answer that keeps the model dead, or
    /// none (it then says the custodian is unreachable).
    /// </summary>
    public void Answer(int reply, int model, int pid, int uffd = -1)
    {
        int size = sizeof(SealedAccessAnswer) + SealedAccessAnswer.MaxMessageBytes;
        byte* buffer = stackalloc byte[size];
        new Span<byte>(buffer, size).Clear();
        var answer = (SealedAccessAnswer*)buffer;
        PageSession pages = PageSession.None;
        try
        {
            Libc.SetSocketTimeouts(reply, 5);
            SealedAccessRequest request;
            nint n = Libc.recv(reply, &request, (nuint)sizeof(SealedAccessRequest), 0);
            string message;
            if (n != sizeof(SealedAccessRequest) || !CustodianGrant.Matches(_token, new ReadOnlySpan<byte>(request.Token, CustodianGrant.TokenSize)))
            {
                answer->Status = SealedAccessAnswer.Refused;
                answer->Reason = (int)SealAccessReason.NoIdentity;
                message = "the custodian refused the request: it did not come with the grant tibet-run gave the program";
                _say($"tibet custodian: refused a sealed-model request of pid {pid}: it did not show the program's grant");
            }
            else
            {
                int owned = model, ownedUffd = uffd;
                model = uffd = -1; // Decide owns them from here, whatever happens
                message = Decide(owned, ownedUffd, pid, answer, out pages);
            }
            byte[] text = System.Text.Encoding.UTF8.GetBytes(SealedModel.OneLine(message));
            int length = Math.Min(text.Length, SealedAccessAnswer.MaxMessageBytes);
            text.AsSpan(0, length).CopyTo(new Span<byte>(buffer + sizeof(SealedAccessAnswer), length));
            answer->MessageBytes = length;
            nuint bytes = (nuint)(sizeof(SealedAccessAnswer) + length);
            if (pages.Exists)
                Libc.SendWithDescriptors(reply, buffer, bytes, pages.Descriptors);
            else
                Libc.send(reply, buffer, bytes, Libc.MSG_NOSIGNAL);
        }
        catch (Exception e)
        {
            _say($"tibet custodian: a sealed-model request of pid {pid} failed: {e.Message}");
        }
        finally
        {
            CryptographicOperations.ZeroMemory(new Span<byte>(buffer, size));
            Libc.close(reply);
            if (model >= 0)
                Libc.close(model);
            if (uffd >= 0)
                Libc.close(uffd);
            // Handed over (or never to be): the session's thread sees the end if nobody took it.
            ClosePages(ref pages);
        }
    }

    /// <summary>Decides for the model open as <paramref name="model"/>, records the
    /// decision, and fills <paramref name="answer"/>; returns the message. Closes
    /// <paramref name="model"/> and <paramref name="uffd"/>, or hands them to the session.</summary>
    private string Decide(int model, int uffd, int pid, SealedAccessAnswer* answer, out PageSession pages)
    {
        pages = PageSession.None;
        string path = DescriptorPath(model);
        // A copy of the model's descriptor for the session's installer, made before the
        // stream below closes the original.
        int file = uffd >= 0 ? Libc.fcntl(model, Libc.F_DUPFD_CLOEXEC, HighDescriptors.Floor) : -1;
        int dupErrno = Libc.LastErrno;
        using var handle = new SafeFileHandle(model, ownsHandle: true);
        AccessDecision decision;
        long dataOffset;
        try
        {
            using var stream = new FileStream(handle, FileAccess.Read, bufferSize: 0);
            using var sealedModel = SealedModel.Open(stream, path);
            decision = sealedModel.Decide(_identity, _claim, DateTimeOffset.UtcNow);
            dataOffset = sealedModel.DataOffset;
        }
        catch (Exception e)
        {
            if (uffd >= 0)
                Libc.close(uffd);
            if (file >= 0)
                Libc.close(file);
            // Whatever the process sent (a write-only descriptor, a pipe, a file that
            // changes): refused, said, never a custodian that stops answering.
            answer->Status = SealedAccessAnswer.Refused;
            answer->Reason = (int)(e is SealedModelException sealedError ? sealedError.Reason : SealAccessReason.MalformedModel);
            return $"the custodian cannot open it as a sealed model: {e.Message}";
        }
        bool handedOver = false;
        try
        {
            Interlocked.Increment(ref _decisions);
            string reason = $"{decision.Reason}: {decision.Message}";
            bool live = false;
            if (decision.IsLive)
            {
                live = true;
                try
                {
                    // The key goes to the session's thread, which keeps it for the process.
                    ProcessPageInstaller? installer = InstallerFor(uffd, file, dupErrno, dataOffset, pid);
                    uffd = file = -1;
                    pages = SealedPageService.Start(decision.Key, pid, installer);
                    handedOver = true;
                    answer->Installs = installer != null ? 1 : 0;
                }
                catch (InvalidOperationException e)
                {
                    live = false;
                    reason = $"SessionFailed: the custodian could not start the model's page session ({e.Message})";
                }
            }
            try
            {
                new AuditLog().Append(new AuditEntry
                {
                    Object = path,
                    Decision = live ? AuditDecision.Granted : AuditDecision.Denied,
                    Reason = reason,
                    Identity = _identity.Fingerprint,
                    Program = ExecutableOf(pid),
                });
            }
            catch (AuditLogException e)
            {
                ClosePages(ref pages); // the session's thread sees the end and destroys the key
                answer->Status = SealedAccessAnswer.NotRecorded;
                answer->Reason = (int)decision.Reason;
                return e.Message;
            }
            if (decision.IsLive && !live)
            {
                answer->Status = SealedAccessAnswer.Refused;
                answer->Reason = (int)SealAccessReason.NoIdentity;
                return reason;
            }
            answer->WindowPages = live ? SealedPageService.WindowPages : 0;
            answer->Status = SealedAccessAnswer.Decided;
            answer->Reason = (int)decision.Reason;
            return decision.Message;
        }
        finally
        {
            if (!handedOver)
                decision.Dispose();
            if (uffd >= 0)
                Libc.close(uffd);
            if (file >= 0)
                Libc.close(file);
        }
    }

    /// <summary>The installer of a live session, when the process sent its engine's
    /// userfaultfd (<paramref name="uffd"/>; <paramref name="file"/> is the custodian's copy
    /// of the model's descriptor, -1 with <paramref name="dupErrno"/> when none could be
    /// made; both owned by the installer, or closed, from here). Null, said, when what came
    /// is no userfaultfd or nothing can be installed: the session then decrypts in the
    /// window only.</summary>
    private ProcessPageInstaller? InstallerFor(int uffd, int file, int dupErrno, long dataOffset, int pid)
    {
        if (uffd < 0)
        {
            if (file >= 0)
                Libc.close(file);
            return null;
        }
        string? problem = !ProcessPageInstaller.IsUserfaultfd(uffd) ? "it sent something other than a userfaultfd with its request"
            : file < 0 ? $"the model file cannot be kept open ({Libc.Describe(dupErrno)})"
            : null;
        if (problem == null)
        {
            try
            {
                return new ProcessPageInstaller(uffd, file, dataOffset, SealedPageService.Lanes);
            }
            catch (OutOfMemoryException e)
            {
                _say($"tibet custodian: pages of pid {pid}'s sealed model are decrypted in the window: no memory for installing them ({e.Message})");
                return null; // the constructor closed both
            }
        }
        Libc.close(uffd);
        if (file >= 0)
            Libc.close(file);
        _say($"tibet custodian: pages of pid {pid}'s sealed model are decrypted in the window: {problem}");
        return null;
    }

    private static void ClosePages(ref PageSession pages)
    {
        pages.Close();
        pages = PageSession.None;
    }

    private static string DescriptorPath(int fd)
    {
        try
        {
            return new FileInfo($"/proc/self/fd/{fd}").LinkTarget ?? $"descriptor {fd}";
        }
        catch (IOException)
        {
            return $"descriptor {fd}";
        }
    }

    /// <summary>The requesting program, for the audit record: its executable, as the kernel names it.</summary>
    private static string ExecutableOf(int pid)
    {
        try
        {
            return new FileInfo($"/proc/{pid}/exe").LinkTarget ?? $"pid {pid}";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"pid {pid}";
        }
    }

    public void Dispose()
    {
        _identity.Dispose();
        CryptographicOperations.ZeroMemory(_token);
    }
}
