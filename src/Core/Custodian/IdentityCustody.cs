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
/// page session (<see cref="SealedPageService"/>): the process sends ciphertext and gets
/// plaintext back. Neither the identity's X25519 secret nor the model's data key leaves
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
    /// registry). Closes both descriptors. Never throws: whatever fails, the process gets
    /// an answer that keeps the model dead, or none (it then says the custodian is unreachable).
    /// </summary>
    public void Answer(int reply, int model, int pid)
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
                int owned = model;
                model = -1; // Decide owns it from here: its stream closes it, whatever happens
                message = Decide(owned, pid, answer, out pages);
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
            // Handed over (or never to be): the session's thread sees the end if nobody took it.
            ClosePages(ref pages);
        }
    }

    /// <summary>Decides for the model open as <paramref name="model"/> (closed when this
    /// returns), records the decision, and fills <paramref name="answer"/>; returns the message.</summary>
    private string Decide(int model, int pid, SealedAccessAnswer* answer, out PageSession pages)
    {
        pages = PageSession.None;
        string path = DescriptorPath(model);
        using var handle = new SafeFileHandle(model, ownsHandle: true);
        AccessDecision decision;
        try
        {
            using var stream = new FileStream(handle, FileAccess.Read, bufferSize: 0);
            using var sealedModel = SealedModel.Open(stream, path);
            decision = sealedModel.Decide(_identity, _claim, DateTimeOffset.UtcNow);
        }
        catch (Exception e)
        {
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
                    pages = SealedPageService.Start(decision.Key, pid);
                    handedOver = true;
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
        }
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
