using System.Diagnostics;
using Tibet.Core.Sealing;
using Xunit;
using Xunit.Abstractions;

namespace Tibet.IntegrationTests.Sealing;

/// <summary>
/// Thousands of seeded random corruptions of a sealed file: each must end in a
/// <see cref="SealedModelException"/> or a dead decision with a reason, quickly. A live
/// decision is allowed only when every changed byte lies in the data section, and then
/// exactly the changed pages must fail to decrypt while the others give the original.
/// </summary>
public sealed class SealedModelCorruptionTests : IDisposable
{
    private const int Cases = 3000;
    // A case takes about a millisecond; the bound catches hangs, with room for a loaded
    // machine (the first case also pays for JIT compilation).
    private static readonly TimeSpan SlowestAllowed = TimeSpan.FromSeconds(10);

    private readonly SealingWorld _world = new();
    private readonly ITestOutputHelper _output;

    public SealedModelCorruptionTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => _world.Dispose();

    private enum Corruption { FlipBits, Truncate, Overwrite, OverwriteWithNumber }

    [Fact]
    public void Random_corruptions_give_only_dead_decisions_or_the_documented_exception()
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"), scale: 2);
        var original = new SealedBytes(_world.Seal(plain.Path));
        var claim = _world.ClaimFor(_world.Alice);
        byte[] plainPages = new byte[original.DataPages * SealedModel.PageSize];
        plain.DataSection().CopyTo(plainPages, 0);

        var outcomes = new Dictionary<string, int>();
        var slowest = TimeSpan.Zero;
        var clock = new Stopwatch();
        for (int seed = 0; seed < Cases; seed++)
        {
            var random = new Random(seed);
            var kind = (Corruption)random.Next(4);
            byte[] corrupted = Corrupt(original, kind, random);
            if (corrupted.AsSpan().SequenceEqual(original.Bytes))
                continue;

            clock.Restart();
            string outcome;
            try
            {
                outcome = Examine(corrupted, original, plainPages, claim, seed);
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                throw new Xunit.Sdk.XunitException($"seed {seed} ({kind}): unexpected {e.GetType().Name}: {e.Message}\n{e.StackTrace}");
            }
            clock.Stop();
            slowest = clock.Elapsed > slowest ? clock.Elapsed : slowest;
            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
        }

        foreach (var (outcome, count) in outcomes.OrderByDescending(pair => pair.Value))
            _output.WriteLine($"{count,6}  {outcome}");
        _output.WriteLine($"slowest case: {slowest.TotalMilliseconds:F1} ms");
        Assert.True(slowest < SlowestAllowed, $"a corrupted file took {slowest} to decide");
        Assert.True(outcomes.Values.Sum() > Cases * 9 / 10);
        // The corruptions reach every stage of the decision, not just the parser.
        Assert.Contains(outcomes.Keys, outcome => outcome.StartsWith("exception MalformedModel", StringComparison.Ordinal));
        Assert.Contains(outcomes.Keys, outcome => outcome.StartsWith("exception MalformedSeal", StringComparison.Ordinal));
        Assert.Contains("dead HeaderTampered", outcomes.Keys);
        Assert.Contains("live, tampered pages dead", outcomes.Keys);
    }

    private string Examine(byte[] corrupted, SealedBytes original, byte[] plainPages, Tibet.Core.Identity.Claim claim, int seed)
    {
        SealedModel model;
        try
        {
            model = SealedBytes.Open(corrupted);
        }
        catch (SealedModelException e)
        {
            Assert.NotEqual(SealAccessReason.Live, e.Reason);
            Assert.DoesNotContain('\n', e.Message);
            return $"exception {e.Reason}";
        }

        using (model)
        using (var decision = model.Decide(_world.Alice, claim, SealingWorld.Now))
        {
            if (!decision.IsLive)
            {
                Assert.Null(decision.Key);
                Assert.DoesNotContain('\n', decision.Message);
                return $"dead {decision.Reason}";
            }

            // Live: the header and trailer must be untouched, only ciphertext changed.
            Assert.Equal(original.Bytes.Length, corrupted.Length);
            for (int i = 0; i < corrupted.Length; i++)
            {
                if (corrupted[i] != original.Bytes[i])
                    Assert.True(i >= original.DataOffset && i < original.TrailerOffset, $"seed {seed}: live although byte {i} outside the data section changed");
            }
            var plaintext = new byte[SealedModel.PageSize];
            for (long page = 0; page < model.DataPages; page++)
            {
                var range = new Range((int)(model.DataOffset + page * SealedModel.PageSize), (int)(model.DataOffset + (page + 1) * SealedModel.PageSize));
                bool changed = !corrupted.AsSpan(range).SequenceEqual(original.Bytes.AsSpan(range));
                bool opened = decision.Key.TryDecryptPage(page, corrupted.AsSpan(range), plaintext);
                Assert.True(opened != changed, $"seed {seed}: page {page} changed={changed} but opened={opened}");
                if (opened)
                    Assert.True(plaintext.AsSpan().SequenceEqual(plainPages.AsSpan((int)(page * SealedModel.PageSize), SealedModel.PageSize)));
            }
            return "live, tampered pages dead";
        }
    }

    /// <summary>One corruption, aimed at the header, the data pages or the trailer in
    /// about equal measure (a uniform aim would mostly hit data pages).</summary>
    private static byte[] Corrupt(SealedBytes original, Corruption kind, Random random)
    {
        byte[] bytes = (byte[])original.Bytes.Clone();
        int Aim()
        {
            return random.Next(3) switch
            {
                0 => random.Next((int)original.DataOffset),
                1 => random.Next((int)original.DataOffset, (int)original.TrailerOffset),
                _ => random.Next((int)original.TrailerOffset, bytes.Length),
            };
        }

        switch (kind)
        {
            case Corruption.FlipBits:
                for (int flips = random.Next(1, 4); flips > 0; flips--)
                    bytes[Aim()] ^= (byte)(1 << random.Next(8));
                return bytes;
            case Corruption.Truncate:
                return bytes.AsSpan(0, Aim()).ToArray();
            case Corruption.Overwrite:
            {
                int at = Aim();
                int length = Math.Min(random.Next(1, 65), bytes.Length - at);
                random.NextBytes(bytes.AsSpan(at, length));
                return bytes;
            }
            default:
            {
                // Lengths and counts with values that stress bounds checks.
                ulong[] interesting = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x1_0000_0000, long.MaxValue, ulong.MaxValue];
                int at = Math.Min(Aim(), bytes.Length - 8);
                BitConverter.GetBytes(interesting[random.Next(interesting.Length)]).AsSpan(0, random.Next(2) == 0 ? 4 : 8).CopyTo(bytes.AsSpan(at));
                return bytes;
            }
        }
    }
}
