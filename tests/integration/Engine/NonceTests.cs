using Tibet.Core.Crypto;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

public class NonceTests
{
    /// <summary>One million seals under one key: every 12-byte nonce is distinct, and each
    /// one is what the ciphertext was really sealed under (it opens with that nonce and
    /// with no other).</summary>
    [Fact]
    public void A_million_seals_under_one_key_use_a_million_distinct_nonces()
    {
        const int seals = 1_000_000;
        using var cipher = new PageCipher(arenaId: 42);
        var page = new byte[64];
        var sealedPage = new byte[page.Length + PageCipher.TagSize];
        var nonces = new HashSet<UInt128>(seals);
        Span<byte> nonce = stackalloc byte[16];
        var plain = new byte[page.Length];

        for (int i = 0; i < seals; i++)
        {
            BitConverter.TryWriteBytes(page, i);
            ulong counter = cipher.Seal((ulong)(i % 4096), 0, page, sealedPage);
            nonce.Clear();
            PageCipher.WriteNonce(nonce[..PageCipher.NonceSize], counter);
            Assert.True(nonces.Add(BitConverter.ToUInt128(nonce)), $"nonce repeated at seal {i}");
            if (i % 50_000 == 0)
            {
                Assert.True(cipher.Open((ulong)(i % 4096), 0, counter, sealedPage, plain));
                Assert.Equal(page, plain);
                Assert.False(cipher.Open((ulong)(i % 4096), 0, counter - 1, sealedPage, plain));
                Assert.False(cipher.Open((ulong)(i % 4096) + 1, 0, counter, sealedPage, plain));
            }
        }
        Assert.Equal(seals, nonces.Count);
        Assert.Equal((ulong)seals, cipher.SealCount);
    }

    [Fact]
    public void Two_arenas_keys_are_independent()
    {
        using var a = new PageCipher(1);
        using var b = new PageCipher(1);
        var page = new byte[4096];
        var sealedPage = new byte[4096 + PageCipher.TagSize];
        ulong counter = a.Seal(0, 0, page, sealedPage);
        // Same arena id, page, flags and nonce: only the key differs.
        Assert.False(b.Open(0, 0, counter, sealedPage, new byte[4096]));
    }
}
