using Tibet.Core.Crypto;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

public class NonceTests
{
    /// <summary>One million seals under one key: every nonce (12 bytes for AES-256-GCM,
    /// 32 for AEGIS-256) is distinct, and each one is what the ciphertext was really sealed
    /// under (it opens with that nonce and with no other).</summary>
    [Theory]
    [InlineData("aes-256-gcm")]
    [InlineData("aegis-256")]
    public void A_million_seals_under_one_key_use_a_million_distinct_nonces(string suiteName)
    {
        const int seals = 1_000_000;
        PageCipherSuite suite = PageCipherSuite.FromName(suiteName)!;
        using var cipher = new PageCipher(arenaId: 42, suite);
        var page = new byte[64];
        var sealedPage = new byte[page.Length + suite.TagSize];
        var nonces = new HashSet<(UInt128, UInt128)>(seals);
        Span<byte> nonce = stackalloc byte[32];
        var plain = new byte[page.Length];

        for (int i = 0; i < seals; i++)
        {
            BitConverter.TryWriteBytes(page, i);
            ulong counter = cipher.Seal((ulong)(i % 4096), 0, page, sealedPage);
            nonce.Clear();
            PageCipher.WriteNonce(nonce[..suite.NonceSize], counter);
            Assert.True(nonces.Add((BitConverter.ToUInt128(nonce), BitConverter.ToUInt128(nonce[16..]))), $"nonce repeated at seal {i}");
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

    [Theory]
    [InlineData("aes-256-gcm")]
    [InlineData("aegis-256")]
    public void Two_arenas_keys_are_independent(string suiteName)
    {
        PageCipherSuite suite = PageCipherSuite.FromName(suiteName)!;
        using var a = new PageCipher(1, suite);
        using var b = new PageCipher(1, suite);
        var page = new byte[4096];
        var sealedPage = new byte[4096 + suite.TagSize];
        ulong counter = a.Seal(0, 0, page, sealedPage);
        // Same arena id, page, flags and nonce: only the key differs.
        Assert.False(b.Open(0, 0, counter, sealedPage, new byte[4096]));
    }
}
