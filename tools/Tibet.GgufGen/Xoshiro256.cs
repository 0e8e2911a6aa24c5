using System.Numerics;
using System.Runtime.InteropServices;

namespace Tibet.GgufGen;

/// <summary>
/// xoshiro256** (Blackman and Vigna): a seeded generator that yields 8 random bytes in
/// about a nanosecond, so that a gigabyte of weights takes a fraction of a second.
/// System.Random is not used because its sequence for a seed is not a documented
/// contract, and the models must be identical on every machine and .NET version.
/// </summary>
internal struct Xoshiro256
{
    private ulong _s0, _s1, _s2, _s3;

    /// <summary>Seeds the state with SplitMix64, as the algorithm's authors advise, so
    /// that nearby seeds give unrelated streams.</summary>
    public Xoshiro256(ulong seed)
    {
        _s0 = SplitMix64(ref seed);
        _s1 = SplitMix64(ref seed);
        _s2 = SplitMix64(ref seed);
        _s3 = SplitMix64(ref seed);
    }

    public ulong NextUInt64()
    {
        ulong result = BitOperations.RotateLeft(_s1 * 5, 7) * 9;
        ulong shifted = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= shifted;
        _s3 = BitOperations.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Fills whole 8-byte words; the tail of a span whose length is not a
    /// multiple of 8 gets the low bytes of one more word.</summary>
    public void NextBytes(Span<byte> destination)
    {
        Span<ulong> words = MemoryMarshal.Cast<byte, ulong>(destination);
        for (int i = 0; i < words.Length; i++)
            words[i] = NextUInt64();
        Span<byte> tail = destination[(words.Length * sizeof(ulong))..];
        if (tail.Length > 0)
        {
            ulong last = NextUInt64();
            for (int i = 0; i < tail.Length; i++)
                tail[i] = (byte)(last >> (8 * i));
        }
    }

    private static ulong SplitMix64(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
        return z ^ (z >> 31);
    }
}
