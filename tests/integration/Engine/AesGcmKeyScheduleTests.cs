using NSec.Cryptography;
using Tibet.Core.Crypto;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// The expanded AES-256-GCM key (libsodium's precomputation interface, called by tibet
/// itself) must be AES-256-GCM exactly: what it seals, NSec's one-call AES-256-GCM opens,
/// and the other way round, byte for byte; and a tag that does not authenticate is
/// refused with the plaintext cleared, whatever was altered.
/// </summary>
public class AesGcmKeyScheduleTests
{
    private static byte[] Bytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Fact]
    public void It_seals_and_opens_exactly_as_libsodiums_one_call_AES_256_GCM()
    {
        byte[] keyBytes = Bytes(32, 1), nonce = Bytes(12, 2), aad = Bytes(32, 3), page = Bytes(4096, 4);
        using var schedule = new AesGcmKeySchedule(keyBytes);
        using var key = Key.Import(AeadAlgorithm.Aes256Gcm, keyBytes, KeyBlobFormat.RawSymmetricKey);

        var ours = new byte[4096 + 16];
        schedule.Seal(nonce, aad, page, ours);
        byte[] theirs = AeadAlgorithm.Aes256Gcm.Encrypt(key, nonce, aad, page);
        Assert.Equal(theirs, ours);

        var opened = new byte[4096];
        Assert.True(schedule.TryOpen(nonce, aad, theirs, opened));
        Assert.Equal(page, opened);
        Assert.Equal(page, AeadAlgorithm.Aes256Gcm.Decrypt(key, nonce, aad, ours));
    }

    [Theory]
    [InlineData("ciphertext")]
    [InlineData("tag")]
    [InlineData("nonce")]
    [InlineData("associated data")]
    [InlineData("key")]
    public void Anything_altered_is_refused_and_the_plaintext_cleared(string altered)
    {
        byte[] keyBytes = Bytes(32, 5), nonce = Bytes(12, 6), aad = Bytes(32, 7), page = Bytes(4096, 8);
        var sealedPage = new byte[4096 + 16];
        using (var sealer = new AesGcmKeySchedule(keyBytes))
            sealer.Seal(nonce, aad, page, sealedPage);
        switch (altered)
        {
            case "ciphertext": sealedPage[100] ^= 1; break;
            case "tag": sealedPage[^1] ^= 0x80; break;
            case "nonce": nonce[11] ^= 1; break;
            case "associated data": aad[17] ^= 1; break;
            case "key": keyBytes[0] ^= 1; break;
        }
        using var opener = new AesGcmKeySchedule(keyBytes);
        byte[] plaintext = Bytes(4096, 9); // not zeros: the refusal must clear it
        Assert.False(opener.TryOpen(nonce, aad, sealedPage, plaintext));
        Assert.All(plaintext, b => Assert.Equal(0, b));
    }

    [Fact]
    public void A_key_of_the_wrong_size_is_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => new AesGcmKeySchedule(new byte[16]));
        Assert.Contains("32 bytes", e.Message);
    }
}
