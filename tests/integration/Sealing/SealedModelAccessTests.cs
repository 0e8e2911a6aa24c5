using System.Text;
using Tibet.Core.Gguf;
using Tibet.Core.Identity;
using Tibet.Core.Sealing;
using Xunit;

namespace Tibet.IntegrationTests.Sealing;

// Beside Tibet.IntegrationTests.Identity, the bare name Identity means that namespace.
using Identity = Tibet.Core.Identity.Identity;

/// <summary>Each reason a sealed model stays dead, produced by its real cause, and the
/// one combination that makes it live.</summary>
public sealed class SealedModelAccessTests : IDisposable
{
    private readonly SealingWorld _world = new();
    private readonly PlainModel _plain;
    private readonly string _sealedPath;
    private readonly SealedBytes _sealed;

    public SealedModelAccessTests()
    {
        _plain = PlainModel.Write(_world.PathOf("plain.gguf"));
        // CONFIDENTIAL has the length of UNCLASSIFIED, so a test can downgrade it in place.
        _sealedPath = _world.Seal(_plain.Path, ClearanceLevel.Confidential);
        _sealed = new SealedBytes(_sealedPath);
    }

    public void Dispose() => _world.Dispose();

    [Fact]
    public void A_recipient_with_a_valid_claim_from_a_trusted_issuer_gets_a_live_key()
    {
        using var model = SealedModel.Open(_sealedPath);
        foreach (var recipient in new[] { _world.Alice, _world.Bob })
        {
            var claim = _world.ClaimFor(recipient, ClearanceLevel.Confidential);
            using var decision = model.Decide(recipient, claim, SealingWorld.Now);
            Assert.True(decision.IsLive, decision.ToString());
            Assert.Equal(SealAccessReason.Live, decision.Reason);
            Assert.Same(claim, decision.Claim);
            Assert.Equal(model.DataPages, decision.Key.DataPages);
            Assert.Equal(model.Requirements.FileId.ToArray(), decision.Key.FileId.ToArray());
        }
    }

    [Fact]
    public void No_identity_or_no_claim_is_dead()
    {
        AssertDead(SealAccessReason.NoIdentity, null, _world.ClaimFor(_world.Alice), "No identity");
        AssertDead(SealAccessReason.NoClaim, _world.Alice, null, "No claim");
    }

    [Fact]
    public void An_identity_the_model_is_not_sealed_to_is_dead_even_with_a_valid_claim() =>
        AssertDead(SealAccessReason.WrongIdentity, _world.Mallory, _world.ClaimFor(_world.Mallory), _world.Mallory.Fingerprint.ToShortString());

    [Fact]
    public void An_expired_claim_is_dead() =>
        AssertDead(SealAccessReason.ClaimExpired, _world.Alice,
            _world.ClaimFor(_world.Alice, notBefore: SealingWorld.Now.AddDays(-10), expires: SealingWorld.Now.AddSeconds(-1)), "expired");

    [Fact]
    public void A_claim_not_yet_in_force_is_dead() =>
        AssertDead(SealAccessReason.ClaimNotYetValid, _world.Alice,
            _world.ClaimFor(_world.Alice, notBefore: SealingWorld.Now.AddSeconds(1), expires: SealingWorld.Now.AddDays(10)), "comes into force");

    [Fact]
    public void A_claim_from_an_untrusted_issuer_is_dead() =>
        AssertDead(SealAccessReason.UntrustedIssuer, _world.Alice,
            _world.ClaimFor(_world.Alice, issuer: _world.RogueIssuer), _world.RogueIssuer.Fingerprint.ToShortString());

    [Fact]
    public void A_claim_with_a_flipped_signature_byte_is_dead()
    {
        byte[] encoded = _world.ClaimFor(_world.Alice).Encode();
        encoded[^10] ^= 0x01;
        Assert.True(Claim.TryDecode(encoded, out var forged, out _, out _));

        AssertDead(SealAccessReason.ClaimForged, _world.Alice, forged, "signature");
    }

    [Fact]
    public void A_claim_issued_to_another_recipient_is_dead() =>
        AssertDead(SealAccessReason.SubjectMismatch, _world.Alice, _world.ClaimFor(_world.Bob), "subject");

    [Fact]
    public void A_claim_below_the_models_clearance_is_dead() =>
        AssertDead(SealAccessReason.InsufficientClearance, _world.Alice,
            _world.ClaimFor(_world.Alice, ClearanceLevel.Restricted), "RESTRICTED");

    [Fact]
    public void A_flipped_byte_in_the_model_name_is_header_tampering()
    {
        int at = _sealed.HeaderOffsetOf("tiny sealed test model");
        AssertDeadBytes(SealAccessReason.HeaderTampered, _sealed.WithFlippedBit(at + 3));
    }

    [Fact]
    public void A_flipped_bit_in_a_tensor_dimension_is_header_tampering()
    {
        // ne0 of the last tensor, output.weight, goes from 1001 to 1000: the header stays
        // consistent (the tensor is four bytes shorter, within the same last page).
        int at = _sealed.HeaderOffsetOf("output.weight") + "output.weight".Length + 4;
        Assert.Equal(1001 & 0xFF, _sealed.Bytes[at]);
        byte[] shortened = _sealed.WithFlippedBit(at, 0);
        using (var model = SealedBytes.Open(shortened))
            Assert.Equal(1000, model.Header.Tensors[^1].Dimensions[0]);

        AssertDeadBytes(SealAccessReason.HeaderTampered, shortened);
    }

    [Fact]
    public void Downgrading_the_clearance_in_the_header_is_header_tampering()
    {
        int at = _sealed.HeaderOffsetOf("CONFIDENTIAL");
        byte[] downgraded = _sealed.With(bytes => Encoding.ASCII.GetBytes("UNCLASSIFIED").CopyTo(bytes, at));
        using (var model = SealedBytes.Open(downgraded))
            Assert.Equal(ClearanceLevel.Unclassified, model.Requirements.Clearance);

        AssertDeadBytes(SealAccessReason.HeaderTampered, downgraded, _world.ClaimFor(_world.Alice, ClearanceLevel.Unclassified));
    }

    [Fact]
    public void Replacing_the_trusted_issuer_in_the_header_is_header_tampering()
    {
        string genuine = Convert.ToHexStringLower(_world.Issuer.Public.Encode());
        string rogue = Convert.ToHexStringLower(_world.RogueIssuer.Public.Encode());
        int at = _sealed.HeaderOffsetOf(genuine);
        byte[] replaced = _sealed.With(bytes => Encoding.ASCII.GetBytes(rogue).CopyTo(bytes, at));

        AssertDeadBytes(SealAccessReason.HeaderTampered, replaced, _world.ClaimFor(_world.Alice, issuer: _world.RogueIssuer));
    }

    [Fact]
    public void A_flipped_byte_in_the_tag_table_or_the_mac_is_header_tampering()
    {
        AssertDeadBytes(SealAccessReason.HeaderTampered, _sealed.WithFlippedBit(_sealed.TagTableOffset + 5, 3));
        AssertDeadBytes(SealAccessReason.HeaderTampered, _sealed.WithFlippedBit(_sealed.TagTableOffset + _sealed.DataPages * 16 - 1, 7));
        AssertDeadBytes(SealAccessReason.HeaderTampered, _sealed.WithFlippedBit(_sealed.MacOffset, 0));
        AssertDeadBytes(SealAccessReason.HeaderTampered, _sealed.WithFlippedBit(_sealed.MacOffset + 31, 6));
    }

    [Fact]
    public void A_flipped_byte_in_the_recipients_wrapped_key_is_key_tampering()
    {
        var (offset, length) = _sealed.WrappedKeys[0];
        AssertDeadBytes(SealAccessReason.KeyTampered, _sealed.WithFlippedBit(offset + length - 20));
        // Bob's key is untouched, and the MAC then catches the change to alice's.
        using var model = SealedBytes.Open(_sealed.WithFlippedBit(offset + length - 20));
        using var decision = model.Decide(_world.Bob, _world.ClaimFor(_world.Bob), SealingWorld.Now);
        Assert.Equal(SealAccessReason.HeaderTampered, decision.Reason);
    }

    [Fact]
    public void A_flipped_byte_in_a_ciphertext_page_kills_that_page_only()
    {
        const long TamperedPage = 1;
        byte[] tampered = _sealed.WithFlippedBit(_sealed.DataOffset + TamperedPage * SealedModel.PageSize + 1234, 2);
        using var model = SealedBytes.Open(tampered);
        using var decision = model.Decide(_world.Alice, _world.ClaimFor(_world.Alice), SealingWorld.Now);
        Assert.True(decision.IsLive, decision.ToString());

        var plaintext = new byte[SealedModel.PageSize];
        for (long page = 0; page < model.DataPages; page++)
        {
            var ciphertext = tampered.AsSpan((int)(model.DataOffset + page * SealedModel.PageSize), SealedModel.PageSize);
            Assert.Equal(page != TamperedPage, decision.Key.TryDecryptPage(page, ciphertext, plaintext));
            if (page == TamperedPage)
                Assert.True(plaintext.All(b => b == 0), "a page that fails must come back cleared");
        }
    }

    [Fact]
    public void A_page_moved_to_another_index_does_not_decrypt()
    {
        using var model = SealedModel.Open(_sealedPath);
        using var decision = model.Decide(_world.Alice, _world.ClaimFor(_world.Alice), SealingWorld.Now);
        Assert.True(decision.IsLive);
        var plaintext = new byte[SealedModel.PageSize];

        Assert.True(decision.Key.TryDecryptPage(0, _sealed.CiphertextPage(0), plaintext));
        Assert.False(decision.Key.TryDecryptPage(1, _sealed.CiphertextPage(0), plaintext));
        Assert.False(decision.Key.TryDecryptPage(0, _sealed.CiphertextPage(1), plaintext));
    }

    [Fact]
    public void A_key_from_another_seal_of_the_same_model_does_not_decrypt_its_pages()
    {
        var other = new SealedBytes(_world.Seal(_plain.Path, ClearanceLevel.Confidential));
        using var model = SealedModel.Open(_sealedPath);
        using var decision = model.Decide(_world.Alice, _world.ClaimFor(_world.Alice), SealingWorld.Now);

        Assert.False(decision.Key!.TryDecryptPage(0, other.CiphertextPage(0), new byte[SealedModel.PageSize]));
    }

    [Fact]
    public void A_plain_gguf_is_not_sealed()
    {
        Assert.False(SealedModel.IsSealed(_plain.Header));
        Assert.True(SealedModel.IsSealed(GgufFile.Read(_sealedPath)));
        var error = Assert.Throws<SealedModelException>(() => SealedModel.Open(_plain.Path));
        Assert.Equal(SealAccessReason.NotSealed, error.Reason);
    }

    [Fact]
    public void A_file_that_is_not_gguf_is_a_malformed_model()
    {
        var error = Assert.Throws<SealedModelException>(() => SealedBytes.Open(Encoding.ASCII.GetBytes("#!/bin/sh\necho not a model\n")));
        Assert.Equal(SealAccessReason.MalformedModel, error.Reason);
        Assert.IsType<GgufFormatException>(error.InnerException);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public void A_newer_seal_version_is_refused_as_unsupported()
    {
        int at = _sealed.HeaderOffsetOf("tibet.seal.version") + "tibet.seal.version".Length + 4;
        Assert.Equal(1, _sealed.Bytes[at]);
        var error = Assert.Throws<SealedModelException>(() => SealedBytes.Open(_sealed.With(bytes => bytes[at] = 2)));
        Assert.Equal(SealAccessReason.UnsupportedSealVersion, error.Reason);
        Assert.Contains("upgrade tibet", error.Message);
    }

    [Fact]
    public void A_truncated_or_extended_file_has_a_malformed_seal()
    {
        foreach (int newLength in new[] { _sealed.Bytes.Length - 1, _sealed.Bytes.Length - 33, (int)_sealed.TrailerOffset + 5, _sealed.Bytes.Length + 1 })
        {
            byte[] changed = new byte[newLength];
            _sealed.Bytes.AsSpan(0, Math.Min(newLength, _sealed.Bytes.Length)).CopyTo(changed);
            var error = Assert.Throws<SealedModelException>(() => SealedBytes.Open(changed));
            Assert.Equal(SealAccessReason.MalformedSeal, error.Reason);
        }
    }

    [Fact]
    public void A_hostile_wrapped_key_length_is_refused_before_anything_is_read_for_it()
    {
        var (offset, _) = _sealed.WrappedKeys[0];
        byte[] hostile = _sealed.With(bytes => BitConverter.GetBytes(uint.MaxValue).CopyTo(bytes, offset - 4));
        var error = Assert.Throws<SealedModelException>(() => SealedBytes.Open(hostile));
        Assert.Equal(SealAccessReason.MalformedSeal, error.Reason);
        Assert.Contains("wrapped key 0 claims 4294967295 bytes", error.Message);
    }

    [Fact]
    public void Dead_messages_are_one_line_that_say_what_to_do()
    {
        using var model = SealedModel.Open(_sealedPath);
        var decisions = new[]
        {
            model.Decide(null, null, SealingWorld.Now),
            model.Decide(_world.Mallory, null, SealingWorld.Now),
            model.Decide(_world.Alice, null, SealingWorld.Now),
            model.Decide(_world.Alice, _world.ClaimFor(_world.Alice, issuer: _world.RogueIssuer), SealingWorld.Now),
            model.Decide(_world.Alice, _world.ClaimFor(_world.Alice, ClearanceLevel.Unclassified), SealingWorld.Now),
        };
        foreach (var decision in decisions)
        {
            Assert.False(decision.IsLive);
            Assert.Null(decision.Key);
            Assert.DoesNotContain('\n', decision.Message);
            Assert.Matches("(Use|use|get|Get|give|ask)", decision.Message);
        }
    }

    private void AssertDead(SealAccessReason expected, Identity? identity, Claim? claim, string messagePart)
    {
        using var model = SealedModel.Open(_sealedPath);
        using var decision = model.Decide(identity, claim, SealingWorld.Now);
        Assert.Equal(expected, decision.Reason);
        Assert.False(decision.IsLive);
        Assert.Null(decision.Key);
        Assert.Contains(messagePart, decision.Message);
    }

    private void AssertDeadBytes(SealAccessReason expected, byte[] bytes, Claim? claim = null)
    {
        using var model = SealedBytes.Open(bytes);
        using var decision = model.Decide(_world.Alice, claim ?? _world.ClaimFor(_world.Alice), SealingWorld.Now);
        Assert.Equal(expected, decision.Reason);
        Assert.Null(decision.Key);
    }
}

/// <summary>A model sealed with a scope opens only for claims that cover it: the claim is
/// bound to the models its issuer meant, not to every model at its clearance.</summary>
public sealed class SealedModelScopeTests : IDisposable
{
    private readonly SealingWorld _world = new();

    public void Dispose() => _world.Dispose();

    [Fact]
    public void A_scoped_model_opens_for_a_claim_covering_its_scope_or_an_unscoped_claim_and_no_other()
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"));
        string scoped = _world.PathOf("scoped.gguf");
        ModelSealer.Seal(plain.Path, scoped, [_world.Alice.Public], ClearanceLevel.Secret, [_world.Issuer.Public], scope: "models/llama");
        using var model = SealedModel.Open(scoped);
        Assert.Equal("models/llama", model.Requirements.Scope);

        Claim Scoped(params string[] scopes) =>
            Claim.Issue(_world.Issuer, _world.Alice.Public, ClearanceLevel.Secret, SealingWorld.Now.AddDays(-1), SealingWorld.Now.AddDays(1), scopes, SealingWorld.Now.AddDays(-1));

        using (var covering = model.Decide(_world.Alice, Scoped("redis", "models/llama"), SealingWorld.Now))
            Assert.True(covering.IsLive, covering.ToString());
        using (var unscoped = model.Decide(_world.Alice, Scoped(), SealingWorld.Now))
            Assert.True(unscoped.IsLive, unscoped.ToString());
        using (var other = model.Decide(_world.Alice, Scoped("models/mistral"), SealingWorld.Now))
        {
            Assert.Equal(SealAccessReason.ScopeMismatch, other.Reason);
            Assert.Contains("models/llama", other.Message);
        }
    }

    [Fact]
    public void The_scope_is_authenticated_with_the_header()
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"));
        string scoped = _world.PathOf("scoped.gguf");
        ModelSealer.Seal(plain.Path, scoped, [_world.Alice.Public], ClearanceLevel.Secret, [_world.Issuer.Public], scope: "models/llama");
        // Rewrite the scope to one the attacker's claim covers, keeping every length.
        byte[] bytes = File.ReadAllBytes(scoped);
        int at = bytes.AsSpan().IndexOf("models/llama"u8);
        "models/xxxxx"u8.CopyTo(bytes.AsSpan(at));
        File.WriteAllBytes(scoped, bytes);

        using var model = SealedModel.Open(scoped);
        var claim = Claim.Issue(_world.Issuer, _world.Alice.Public, ClearanceLevel.Secret, SealingWorld.Now.AddDays(-1), SealingWorld.Now.AddDays(1),
            ["models/xxxxx"], SealingWorld.Now.AddDays(-1));
        using var decision = model.Decide(_world.Alice, claim, SealingWorld.Now);
        Assert.Equal(SealAccessReason.HeaderTampered, decision.Reason);
    }

    [Fact]
    public void A_malformed_scope_is_refused_by_the_sealer()
    {
        var plain = PlainModel.Write(_world.PathOf("plain.gguf"));
        Assert.Throws<ArgumentException>(() => ModelSealer.Seal(plain.Path, _world.PathOf("bad.gguf"), [_world.Alice.Public], ClearanceLevel.Secret,
            [_world.Issuer.Public], scope: "has spaces"));
    }
}
