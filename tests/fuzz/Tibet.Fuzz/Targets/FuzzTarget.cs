namespace Tibet.Fuzz.Targets;

/// <summary>
/// One fuzzing entry point: feeds an input to a real parser of Tibet.Core and treats the
/// exception type that parser documents for bad input as a clean refusal. Anything else
/// escaping <see cref="Run"/> (IndexOutOfRange, NullReference, Overflow, OutOfMemory, an
/// ArgumentException from inside the parser, a broken invariant) is a crash: AFL++ records
/// it under the instrumented build, and the corpus replay test fails on it in CI.
/// </summary>
internal abstract class FuzzTarget
{
    /// <summary>The name on the command line and the corpus folder under tests/fuzz/corpus.</summary>
    public abstract string Name { get; }

    /// <summary>What counts as a refusal, for messages.</summary>
    public abstract string RefusalContract { get; }

    /// <summary>Parses <paramref name="input"/>; returns whether it was accepted or refused.</summary>
    public abstract FuzzOutcome Run(byte[] input);

    /// <summary>Every target, in the order the campaigns run them.</summary>
    public static IReadOnlyList<FuzzTarget> All { get; } =
    [
        new GgufTarget(),
        new SealTarget(),
        new ClaimTarget(),
        new IdentityTarget(),
        new AuditTarget(),
    ];

    public static FuzzTarget? Named(string name) =>
        All.FirstOrDefault(target => string.Equals(target.Name, name, StringComparison.Ordinal));

    public static string Names => string.Join(", ", All.Select(target => target.Name));
}

/// <summary>How a parser answered one input.</summary>
internal readonly record struct FuzzOutcome(bool Accepted, string Detail)
{
    public static FuzzOutcome Accept(string detail) => new(true, detail);

    public static FuzzOutcome Refuse(Exception refusal) => new(false, refusal.GetType().Name + ": " + refusal.Message);

    public static FuzzOutcome Refuse(string detail) => new(false, detail);
}

/// <summary>
/// A parser accepted an input but broke a promise its documentation makes about what it
/// accepts (for example that decoding then encoding gives back the same bytes). Thrown
/// by a target so that the fuzzer records it as a crash.
/// </summary>
internal sealed class FuzzInvariantException(string message) : Exception(message);
