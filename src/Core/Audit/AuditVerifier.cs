using Tibet.Core.Interop;

namespace Tibet.Core.Audit;

/// <summary>
/// Checks an audit log's hash chain and names the first bad line.
/// </summary>
/// <remarks>
/// <para>Each line N must be a well-formed record with sequence number N whose "prev" is
/// the SHA-256 of line N-1 (the genesis value for line 1). When that fails, the verifier
/// works out which line is to blame:</para>
/// <list type="bullet">
/// <item>an edited line K: line K+1's "prev" no longer matches, while K+1 is in its
/// place (right sequence number) and line K+2 still matches K+1: line K is named;</item>
/// <item>an inserted line K: it has the wrong sequence number or "prev", or, if both were
/// forged, line K+1 chains to line K-1 past it: line K is named;</item>
/// <item>a removed or reordered line K: the line now at K has the wrong sequence number
/// and "prev": line K is named.</item>
/// </list>
/// <para>A chain cannot show that lines were cut from the end: what remains is still a
/// valid chain. To catch that, record the head (<see cref="AuditVerification.Head"/>,
/// <c>tibet audit head</c>) somewhere else and pass it as the anchor later. The same
/// anchor defeats an attacker who rewrites the whole log with fresh hashes.</para>
/// </remarks>
public static class AuditVerifier
{
    private const int ReadChunk = 64 * 1024;

    /// <summary>Verifies the log file at <paramref name="path"/>, up to its size when the
    /// verification starts (appends made meanwhile are left for the next run).</summary>
    /// <exception cref="AuditLogException">The file cannot be opened or read.</exception>
    public static AuditVerification VerifyFile(string path, AuditAnchor? anchor = null)
    {
        int fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            int errno = Libc.LastErrno;
            throw new AuditLogException(errno == Libc.ENOENT
                ? $"The audit log '{path}' does not exist. Name an existing log (or set {AuditLogLocation.EnvironmentVariable})."
                : $"Cannot open the audit log '{path}': {Libc.ErrorMessage(errno)}.");
        }
        try
        {
            // The size is read under the shared lock, so it never ends inside a line being
            // appended; the lines before it never change afterwards, so no lock is needed
            // while they are read.
            AuditNative.Lock(fd, Libc.LOCK_SH);
            long size = Libc.lseek(fd, 0, Libc.SEEK_END);
            AuditNative.Lock(fd, Libc.LOCK_UN);
            if (size < 0)
                throw new AuditLogException($"Cannot measure the audit log '{path}': {Libc.ErrorMessage(Libc.LastErrno)}. Check that it is a regular file.");

            var checker = new ChainChecker(anchor);
            byte[] buffer = new byte[AuditRecordFormat.MaxLineLength + ReadChunk];
            int filled = 0, start = 0;
            long offset = 0;
            while (!checker.IsFinished)
            {
                int newline = buffer.AsSpan(start, filled - start).IndexOf((byte)'\n');
                if (newline >= 0)
                {
                    checker.Add(buffer.AsSpan(start, newline), terminated: true);
                    start += newline + 1;
                    continue;
                }
                if (offset >= size)
                {
                    if (filled > start)
                        checker.Add(buffer.AsSpan(start, filled - start), terminated: false);
                    break;
                }
                buffer.AsSpan(start, filled - start).CopyTo(buffer);
                filled -= start;
                start = 0;
                if (filled > AuditRecordFormat.MaxLineLength)
                {
                    checker.AddOverlongLine();
                    break;
                }
                int want = (int)Math.Min(buffer.Length - filled, size - offset);
                long read = AuditNative.ReadAt(fd, buffer.AsSpan(filled, want), offset);
                if (read < 0)
                    throw new AuditLogException($"Cannot read the audit log '{path}': {Libc.ErrorMessage(Libc.LastErrno)}.");
                if (read == 0)
                    size = offset; // the file shrank under us; check what there is
                offset += read;
                filled += (int)read;
            }
            return checker.Finish();
        }
        finally
        {
            Libc.close(fd);
        }
    }

    /// <summary>Verifies the contents of a log held in memory.</summary>
    public static AuditVerification Verify(ReadOnlySpan<byte> contents, AuditAnchor? anchor = null)
    {
        var checker = new ChainChecker(anchor);
        while (!contents.IsEmpty && !checker.IsFinished)
        {
            int newline = contents.IndexOf((byte)'\n');
            if (newline < 0)
            {
                checker.Add(contents, terminated: false);
                break;
            }
            checker.Add(contents[..newline], terminated: true);
            contents = contents[(newline + 1)..];
        }
        return checker.Finish();
    }

    /// <summary>The line-by-line state of a verification.</summary>
    private sealed class ChainChecker(AuditAnchor? anchor)
    {
        private long _lines;
        private string _previousHash = AuditChain.Genesis;
        private string? _hashBeforePrevious;
        private AuditVerification? _result;

        // A broken link at line N whose sequence number is right means line N-1 was
        // changed, unless line N itself was (then line N+1's link breaks too): the next
        // line decides.
        private (long Line, string Message, long Alternative, string AlternativeMessage, string Hash)? _pending;

        public bool IsFinished => _result != null;

        public void Add(ReadOnlySpan<byte> line, bool terminated)
        {
            if (line.Length > AuditRecordFormat.MaxLineLength)
            {
                AddOverlongLine();
                return;
            }
            long number = ++_lines;
            string hash = AuditChain.Hash(line);
            bool parsed = AuditRecordFormat.TryParse(line, out var record, out string problem);

            if (_pending is { } pending)
            {
                bool alsoBroken = terminated && parsed && record!.Sequence == number && record.Previous != pending.Hash;
                _result = alsoBroken ? Bad(pending.Alternative, pending.AlternativeMessage) : Bad(pending.Line, pending.Message);
                return;
            }
            if (!terminated)
            {
                _result = Bad(number, $"line {number} is incomplete: it has no final newline (a write was cut short, or the file was edited)");
                return;
            }
            if (!parsed)
            {
                _result = Bad(number, $"line {number} is not a TIBET audit record: {problem}");
                return;
            }

            if (record!.Previous != _previousHash)
            {
                if (number >= 2 && hash == _previousHash)
                    _result = Bad(number, $"line {number} repeats line {number - 1}: it was inserted (copied)");
                else if (number >= 3 && record.Previous == _hashBeforePrevious)
                    _result = Bad(number - 1, $"line {number - 1} was inserted: line {number} chains to line {number - 2} directly");
                else if (record.Sequence == number && number >= 2)
                    _pending = (number - 1, $"line {number - 1} was changed: line {number} recorded a different hash for it",
                        number, $"line {number} was changed: its record of line {number - 1} no longer matches, and line {number + 1}'s record of it does not match either",
                        hash);
                else if (record.Sequence == number)
                    _result = Bad(number, "line 1 was changed: it does not start from the genesis value (64 zeros)");
                else if (record.Sequence > number)
                    _result = Bad(number, $"line {number} has sequence number {record.Sequence}: lines before it were removed, or lines were reordered or inserted here");
                else
                    _result = Bad(number, $"line {number} has sequence number {record.Sequence}: it is out of place (inserted, copied or reordered)");
                if (_result != null || _pending != null)
                    return;
            }
            if (record.Sequence != number)
            {
                _result = Bad(number, $"line {number} has sequence number {record.Sequence} although it chains to line {number - 1}: lines were renumbered or forged");
                return;
            }
            if (anchor != null && anchor.Line == number && anchor.Hash != hash)
            {
                _result = Bad(number, $"line {number} does not match the anchor {anchor}: the log was rewritten up to this line");
                return;
            }
            _hashBeforePrevious = _previousHash;
            _previousHash = hash;
        }

        public void AddOverlongLine()
        {
            long number = _lines + 1;
            if (_pending is { } pending)
                _result = Bad(pending.Line, pending.Message);
            else
                _result = Bad(number, $"line {number} is longer than any record ({AuditRecordFormat.MaxLineLength} bytes): it is not a TIBET audit record");
        }

        public AuditVerification Finish()
        {
            if (_result != null)
                return _result;
            if (_pending is { } pending)
                return Bad(pending.Line, pending.Message);
            if (anchor != null && anchor.Line > _lines)
                return Bad(_lines + 1, $"the log has {_lines} lines, but the anchor {anchor} names line {anchor.Line}: lines were removed from its end");
            string summary = _lines == 0 ? "the log is empty" : $"all {_lines} lines chain correctly";
            if (anchor is { Line: > 0 })
                summary += $", and line {anchor.Line} matches the anchor";
            return new AuditVerification(_lines, null, summary, new AuditAnchor(_lines, _previousHash));
        }

        private AuditVerification Bad(long line, string message) => new(_lines, line, message, null);
    }
}
