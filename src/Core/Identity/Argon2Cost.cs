namespace Tibet.Core.Identity;

/// <summary>
/// The Argon2id work factor that turns a passphrase into the key of a protected secret
/// identity (parallelism is always 1, libsodium's only choice). It is stored in the file,
/// so a file can be opened whatever the cost it was written with, within the bounds
/// below, which also stop a doctored file from asking for unbounded memory or time.
/// </summary>
public sealed class Argon2Cost : IEquatable<Argon2Cost>
{
    /// <summary>Smallest memory accepted: 1 MiB.</summary>
    public const int MinMemoryKiB = 1024;

    /// <summary>Largest memory accepted: 1 GiB.</summary>
    public const int MaxMemoryKiB = 1024 * 1024;

    /// <summary>Smallest number of passes accepted.</summary>
    public const int MinPasses = 1;

    /// <summary>Largest number of passes accepted.</summary>
    public const int MaxPasses = 10;

    /// <summary>
    /// 64 MiB and 3 passes: RFC 9106's second recommended setting (with parallelism 1).
    /// About 0.6 s on a 2-vCPU EPYC VM, paid once per load of a protected identity.
    /// </summary>
    public static Argon2Cost Default { get; } = new(64 * 1024, 3);

    /// <summary>Creates a cost; throws <see cref="ArgumentOutOfRangeException"/> outside the bounds.</summary>
    public Argon2Cost(int memoryKiB, int passes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(memoryKiB, MinMemoryKiB);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(memoryKiB, MaxMemoryKiB);
        ArgumentOutOfRangeException.ThrowIfLessThan(passes, MinPasses);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(passes, MaxPasses);
        MemoryKiB = memoryKiB;
        Passes = passes;
    }

    /// <summary>Memory in KiB.</summary>
    public int MemoryKiB { get; }

    /// <summary>Passes over the memory.</summary>
    public int Passes { get; }

    internal static bool IsWithinBounds(uint memoryKiB, uint passes) =>
        memoryKiB is >= MinMemoryKiB and <= MaxMemoryKiB && passes is >= MinPasses and <= MaxPasses;

    /// <inheritdoc/>
    public bool Equals(Argon2Cost? other) => other is not null && other.MemoryKiB == MemoryKiB && other.Passes == Passes;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as Argon2Cost);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(MemoryKiB, Passes);

    /// <summary>"65536 KiB, 3 passes".</summary>
    public override string ToString() => $"{MemoryKiB} KiB, {Passes} passes";
}
