using Tibet.Core.Sealing;
using Xunit;

namespace Tibet.IntegrationTests.Sealing;

/// <summary>The page decryptor as the fault handler uses it: no allocation, no
/// exceptions, and a dead page for anything it cannot vouch for.</summary>
public sealed class SealedModelKeyTests : IDisposable
{
    private readonly SealingWorld _world = new();
    private readonly PlainModel _plain;
    private readonly SealedBytes _sealed;
    private readonly SealedModel _model;
    private readonly AccessDecision _decision;

    public SealedModelKeyTests()
    {
        _plain = PlainModel.Write(_world.PathOf("plain.gguf"), scale: 4);
        string sealedPath = _world.Seal(_plain.Path);
        _sealed = new SealedBytes(sealedPath);
        _model = SealedModel.Open(sealedPath);
        _decision = _model.Decide(_world.Alice, _world.ClaimFor(_world.Alice), SealingWorld.Now);
        Assert.True(_decision.IsLive, _decision.ToString());
    }

    private SealedModelKey Key => _decision.Key!;

    public void Dispose()
    {
        _decision.Dispose();
        _model.Dispose();
        _world.Dispose();
    }

    [Fact]
    public void Decrypting_a_thousand_pages_allocates_no_managed_memory()
    {
        var plaintext = new byte[SealedModel.PageSize];
        byte[] ciphertext = _sealed.CiphertextPage(0).ToArray();
        byte[] tampered = (byte[])ciphertext.Clone();
        tampered[17] ^= 1;
        // Warm up: JIT, NSec's and libsodium's lazy initialisation, and tiered compilation:
        // a method promoted while the loop below runs made the runtime allocate on this
        // thread once (2920 bytes in one CI run, 0 in the others), which is not the
        // decryption allocating. So every tier-up happens here, and the background
        // compiler gets time to install the final code.
        for (int i = 0; i < 2000; i++)
        {
            Assert.True(Key.TryDecryptPage(0, ciphertext, plaintext));
            Assert.False(Key.TryDecryptPage(0, tampered, plaintext));
        }
        Thread.Sleep(300);
        for (int i = 0; i < 100; i++)
            Key.TryDecryptPage(0, ciphertext, plaintext);

        long before = GC.GetAllocatedBytesForCurrentThread();
        int live = 0;
        for (int i = 0; i < 1000; i++)
        {
            if (Key.TryDecryptPage(0, ciphertext, plaintext))
                live++;
        }
        for (int i = 0; i < 100; i++)
            Key.TryDecryptPage(0, tampered, plaintext);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(1000, live);
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void Out_of_range_pages_and_wrong_buffer_sizes_give_false_never_an_exception()
    {
        var plaintext = new byte[SealedModel.PageSize];
        var ciphertext = _sealed.CiphertextPage(0);

        Assert.False(Key.TryDecryptPage(-1, ciphertext, plaintext));
        Assert.False(Key.TryDecryptPage(_model.DataPages, ciphertext, plaintext));
        Assert.False(Key.TryDecryptPage(long.MaxValue, ciphertext, plaintext));
        Assert.False(Key.TryDecryptPage(0, ciphertext[..100], plaintext));
        Assert.False(Key.TryDecryptPage(0, ciphertext, new byte[SealedModel.PageSize + 1]));
        Assert.False(Key.TryDecryptPage(0, ciphertext, Span<byte>.Empty));
        Assert.True(Key.TryDecryptPage(0, ciphertext, plaintext));
    }

    [Fact]
    public void A_disposed_key_decrypts_nothing()
    {
        using var decision = _model.Decide(_world.Bob, _world.ClaimFor(_world.Bob), SealingWorld.Now);
        var plaintext = new byte[SealedModel.PageSize];
        Assert.True(decision.Key!.TryDecryptPage(0, _sealed.CiphertextPage(0), plaintext));

        decision.Dispose();
        decision.Dispose();

        Assert.False(decision.Key.TryDecryptPage(0, _sealed.CiphertextPage(0), plaintext));
        Assert.True(plaintext.All(b => b == 0));
    }

    [Fact]
    public void A_page_decrypts_in_place()
    {
        byte[] page = _sealed.CiphertextPage(2).ToArray();
        byte[] expected = new byte[SealedModel.PageSize];
        Assert.True(Key.TryDecryptPage(2, _sealed.CiphertextPage(2), expected));

        Assert.True(Key.TryDecryptPage(2, page, page));

        Assert.Equal(expected, page);
    }

    [Fact]
    public void Threads_decrypting_at_once_all_get_the_right_plaintext()
    {
        var expected = new byte[_model.DataPages][];
        for (long page = 0; page < _model.DataPages; page++)
        {
            expected[page] = new byte[SealedModel.PageSize];
            Assert.True(Key.TryDecryptPage(page, _sealed.CiphertextPage(page), expected[page]));
        }

        int failures = 0;
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, worker =>
        {
            var plaintext = new byte[SealedModel.PageSize];
            for (int round = 0; round < 2000; round++)
            {
                long page = (worker + round) % _model.DataPages;
                if (!Key.TryDecryptPage(page, _sealed.CiphertextPage(page), plaintext) || !plaintext.AsSpan().SequenceEqual(expected[page]))
                    Interlocked.Increment(ref failures);
            }
        });

        Assert.Equal(0, failures);
    }
}
