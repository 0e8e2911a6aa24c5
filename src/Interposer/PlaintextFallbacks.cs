using System.Globalization;
using System.Text.Unicode;
using Tibet.Interposer.Native;

namespace Tibet.Interposer;

/// <summary>Why memory that should be encrypted is not. New reasons go at the end, each
/// with its lines in <see cref="PlaintextFallbacks"/> (Name, Why, Remedy) and in
/// <see cref="PlaintextFallbacks.Reasons"/>.</summary>
internal enum PlaintextReason
{
    /// <summary>The process cannot use userfaultfd, so nothing is encrypted.</summary>
    UserfaultfdMissing,

    /// <summary>A reservation has no free stretch large enough (exhausted or fragmented).</summary>
    RegionExhausted,

    /// <summary>The engine could not create the arena (an mmap or registration failed).</summary>
    ArenaCreationFailed,

    /// <summary>The size is more than a reservation can ever hold.</summary>
    TooLarge,

    /// <summary>A forked child allocates; the child never runs managed code.</summary>
    ForkedChild,

    /// <summary>An exception inside tibet on an allocation path.</summary>
    InternalError,

    /// <summary>A writable anonymous map at an address the program chose (MAP_FIXED), not a
    /// commit inside a reservation tibet took (outside its arenas, or executable): the
    /// kernel puts fresh memory there, replacing whatever was mapped, so no arena can.</summary>
    FixedAddress,
}

/// <summary>How often, and for how many bytes, memory ran unencrypted for one reason;
/// and how many such calls were refused instead (--require-encryption).</summary>
internal readonly record struct PlaintextFallbackCount(PlaintextReason Reason, string Name, long Count, long Bytes, long Refused);

/// <summary>
/// The one place that records every case where memory that should be encrypted is not:
/// a count and a byte total per reason for the statistics, and one line on stderr per
/// reason, the first time it happens, saying what, how much, why and what to do.
/// Under --require-encryption nothing runs unencrypted: the call is refused, and the
/// shim fails it with ENOMEM.
/// </summary>
/// <remarks>
/// Called on allocation paths, with no lock of tibet held: counting and announcing
/// allocate nothing (the line is composed from UTF-8 literals on the stack and written
/// with write(2)), so a program thread holding its allocator's locks is never sent back
/// into that allocator. Only the optional detail (the message of an exception that has
/// already been allocated) is a managed string.
/// </remarks>
internal static unsafe class PlaintextFallbacks
{
    /// <summary>The answer that makes the shim fail the call with ENOMEM, leaving a
    /// realloc's old block as it was.</summary>
    public const nint Refused = -1;

    /// <summary>Every reason, for the statistics.</summary>
    public static readonly PlaintextReason[] Reasons =
    [
        PlaintextReason.UserfaultfdMissing, PlaintextReason.RegionExhausted, PlaintextReason.ArenaCreationFailed,
        PlaintextReason.TooLarge, PlaintextReason.ForkedChild, PlaintextReason.InternalError, PlaintextReason.FixedAddress,
    ];

    private const int Slots = 32; // room for reasons to come, without resizing on a hot path
    private static readonly long[] Counts = new long[Slots];
    private static readonly long[] ByteTotals = new long[Slots];
    private static readonly long[] Refusals = new long[Slots];
    private static readonly int[] Announced = new int[Slots];
    private static volatile bool _requireEncryption;

    private enum Outcome { Served, Forwarded, Refused }

    /// <summary>At start-up, before any allocation path can get here: the policy, and the
    /// tables touched once so that nothing is initialised lazily later.</summary>
    public static void Configure(bool requireEncryption)
    {
        _requireEncryption = requireEncryption;
        foreach (var reason in Reasons)
            _ = Slot(reason);
    }

    /// <summary>Set by tibet-run --require-encryption: refuse rather than run unencrypted.</summary>
    public static bool RequireEncryption => _requireEncryption;

    /// <summary>
    /// A malloc-family call tibet cannot serve from an arena: the host's allocator serves
    /// it, unencrypted, and that is counted and announced; or it is refused when encryption
    /// is required. When the host cannot hold it either, 0: nothing ran unencrypted, and
    /// the shim passes the call on to the host, whose answer (NULL and ENOMEM) is the one
    /// the program would get without tibet.
    /// </summary>
    public static nint ServeUnencrypted(PlaintextReason reason, ReadOnlySpan<byte> call, ulong size, ulong alignment, string? detail = null)
    {
        if (_requireEncryption)
            return Refuse(reason, call, size, detail);
        nint block = HostAllocator.Allocate(size, alignment);
        if (block != 0)
            Note(reason, call, size, Outcome.Served, detail);
        return block;
    }

    /// <summary>
    /// A call the shim passes on to libc, which then serves it unencrypted if it can
    /// (counted and announced as such); or refused when encryption is required. Used where
    /// tibet cannot make the call itself (a mapping, whose flags only the shim knows).
    /// </summary>
    public static nint Forward(PlaintextReason reason, ReadOnlySpan<byte> call, ulong size, string? detail = null)
    {
        if (_requireEncryption)
            return Refuse(reason, call, size, detail);
        Note(reason, call, size, Outcome.Forwarded, detail);
        return 0;
    }

    /// <summary>Counts and announces a refusal, and returns <see cref="Refused"/>: under
    /// --require-encryption, or where falling back to the host would not be safe (a realloc
    /// whose block is in an unknown state after an error).</summary>
    public static nint Refuse(PlaintextReason reason, ReadOnlySpan<byte> call, ulong size, string? detail = null)
    {
        Note(reason, call, size, Outcome.Refused, detail);
        return Refused;
    }

    /// <summary>Records memory that runs unencrypted, found elsewhere (for example at
    /// start-up, or for a forked child).</summary>
    public static void Record(PlaintextReason reason, ReadOnlySpan<byte> what, ulong bytes, string? detail = null) =>
        Note(reason, what, bytes, Outcome.Served, detail);

    /// <summary>The counts for every reason, zeros included, for the statistics.</summary>
    public static PlaintextFallbackCount[] Snapshot()
    {
        var counts = new PlaintextFallbackCount[Reasons.Length];
        for (int i = 0; i < Reasons.Length; i++)
        {
            int slot = Slot(Reasons[i]);
            counts[i] = new PlaintextFallbackCount(Reasons[i], Name(Reasons[i]), Volatile.Read(ref Counts[slot]),
                Volatile.Read(ref ByteTotals[slot]), Volatile.Read(ref Refusals[slot]));
        }
        return counts;
    }

    /// <summary>The name of a reason in the statistics.</summary>
    public static string Name(PlaintextReason reason) => reason switch
    {
        PlaintextReason.UserfaultfdMissing => "userfaultfdMissing",
        PlaintextReason.RegionExhausted => "regionExhausted",
        PlaintextReason.ArenaCreationFailed => "arenaCreationFailed",
        PlaintextReason.TooLarge => "tooLarge",
        PlaintextReason.ForkedChild => "forkedChild",
        PlaintextReason.InternalError => "internalError",
        PlaintextReason.FixedAddress => "fixedAddress",
        _ => "reason" + ((int)reason).ToString(CultureInfo.InvariantCulture),
    };

    private static ReadOnlySpan<byte> Why(PlaintextReason reason) => reason switch
    {
        PlaintextReason.UserfaultfdMissing => "userfaultfd cannot be used in this process"u8,
        // 1 TiB: Redirector.RegionSize.
        PlaintextReason.RegionExhausted => "tibet's 1 TiB address region has no free stretch large enough (exhausted or fragmented)"u8,
        PlaintextReason.ArenaCreationFailed => "tibet could not create the encrypted arena"u8,
        PlaintextReason.TooLarge => "it is larger than tibet's 1 TiB address region can ever hold"u8,
        PlaintextReason.ForkedChild => "a forked child allocates, and tibet does not serve forked children"u8,
        PlaintextReason.InternalError => "tibet failed inside (the line before names the error)"u8,
        PlaintextReason.FixedAddress => "the program mapped it at an address of its own choosing (MAP_FIXED) outside tibet's arenas, or writable and executable (JIT code), where the kernel replaces what was mapped and no encrypted arena can be put"u8,
        _ => "of an unnamed reason"u8,
    };

    private static ReadOnlySpan<byte> Remedy(PlaintextReason reason) => reason switch
    {
        PlaintextReason.UserfaultfdMissing => "run as root, or set vm.unprivileged_userfaultfd=1"u8,
        PlaintextReason.RegionExhausted => "free large blocks, or raise --threshold so that fewer calls are redirected"u8,
        PlaintextReason.ArenaCreationFailed => "vm.max_map_count and RLIMIT_AS bound the number and size of arenas"u8,
        PlaintextReason.TooLarge => "allocate it in smaller pieces"u8,
        PlaintextReason.ForkedChild => "have the child exec a program, which then runs under tibet"u8,
        PlaintextReason.InternalError => "please report the error line"u8,
        PlaintextReason.FixedAddress => "let the kernel choose the address (jemalloc commits so only where vm.overcommit_memory is 2)"u8,
        _ => "see the statistics"u8,
    };

    private static int Slot(PlaintextReason reason) => (uint)reason < Slots ? (int)reason : Slots - 1;

    private static void Note(PlaintextReason reason, ReadOnlySpan<byte> call, ulong bytes, Outcome outcome, string? detail)
    {
        int slot = Slot(reason);
        if (outcome == Outcome.Refused)
        {
            Interlocked.Increment(ref Refusals[slot]);
        }
        else
        {
            Interlocked.Increment(ref Counts[slot]);
            AddSaturating(ref ByteTotals[slot], bytes);
        }
        if (Interlocked.Exchange(ref Announced[slot], 1) == 0)
            Announce(reason, call, bytes, outcome, detail);
    }

    private static void AddSaturating(ref long total, ulong bytes)
    {
        long add = (long)Math.Min(bytes, (ulong)long.MaxValue);
        long seen = Volatile.Read(ref total);
        while (true)
        {
            long sum = seen > long.MaxValue - add ? long.MaxValue : seen + add;
            long was = Interlocked.CompareExchange(ref total, sum, seen);
            if (was == seen) return;
            seen = was;
        }
    }

    /// <summary>One line: what, how much, why, and what to do; composed on the stack.</summary>
    private static void Announce(PlaintextReason reason, ReadOnlySpan<byte> call, ulong bytes, Outcome outcome, string? detail)
    {
        Span<byte> line = stackalloc byte[1024];
        var text = new LineBuilder(line);
        text.Append("tibet: "u8);
        text.Append(call);
        text.Append(" of "u8);
        text.Append(bytes);
        text.Append(outcome switch
        {
            Outcome.Served => " bytes runs unencrypted, served by the program's own allocator: "u8,
            Outcome.Forwarded => " bytes was passed to libc unencrypted: "u8,
            _ => " bytes was refused with ENOMEM: "u8,
        });
        text.Append(Why(reason));
        if (detail != null)
        {
            text.Append(" ("u8);
            text.Append(detail);
            text.Append(")"u8);
        }
        if (outcome == Outcome.Refused)
        {
            text.Append(_requireEncryption ? ". Encryption is required (--require-encryption); "u8 : ". To avoid it: "u8);
            text.Append(Remedy(reason));
        }
        else
        {
            text.Append(". To fail such calls with ENOMEM instead, run under tibet-run --require-encryption; or "u8);
            text.Append(Remedy(reason));
        }
        text.Append(". Later cases of this kind are counted in the statistics, not announced."u8);
        ReadOnlySpan<byte> finished = text.Finish();
        fixed (byte* p = finished)
            Shim.Report(p, (nuint)finished.Length);
    }

    /// <summary>Appends to a fixed buffer, cutting what does not fit; the last byte is
    /// kept for the newline.</summary>
    private ref struct LineBuilder(Span<byte> buffer)
    {
        private readonly Span<byte> _buffer = buffer;
        private int _length;

        private readonly Span<byte> Room => _buffer[_length..^1];

        public void Append(ReadOnlySpan<byte> utf8)
        {
            int n = Math.Min(utf8.Length, Room.Length);
            utf8[..n].CopyTo(Room);
            _length += n;
        }

        public void Append(string text)
        {
            Utf8.FromUtf16(text, Room, out _, out int written);
            _length += written;
        }

        public void Append(ulong value)
        {
            if (value.TryFormat(Room, out int written, default, CultureInfo.InvariantCulture))
                _length += written;
        }

        public ReadOnlySpan<byte> Finish()
        {
            _buffer[_length++] = (byte)'\n';
            return _buffer[.._length];
        }
    }
}
