using Tibet.Core.Gguf;
using Tibet.Core.Identity;
using Tibet.Core.Paging;
using Tibet.Core.Sealing;

namespace Tibet.Bench;

/// <summary>
/// The demo's access-control part, after the original system's: the same 64 pages, now
/// the weights of a model file sealed to one identity, are mapped into an arena the way
/// tibet-run serves a program's map of a sealed model (a SealedFileSource behind the arena),
/// once with a valid claim (live: the pages read back exactly) and once for each of two
/// invalid ones (dead material: every page reads as zeros).
/// </summary>
internal static class SpaceShuttleAccess
{
    private const int PageSize = TestData.PageSize;

    public static bool Run(int step, byte[] pages, Action<string> say, Action<Arena, string> showStates)
    {
        Console.WriteLine();
        Console.WriteLine($"[{step}] Access control: the 64 pages as a sealed model, opened with a valid claim and with invalid ones");
        string directory = Directory.CreateTempSubdirectory("tibet-spaceshuttle-").FullName;
        using var alice = Identity.Generate();
        using var mallory = Identity.Generate();
        using var issuer = Identity.Generate();
        try
        {
            string plain = Path.Combine(directory, "shuttle.gguf");
            string sealedModel = Path.Combine(directory, "shuttle.sealed.gguf");
            WriteModel(plain, pages);
            ModelSealer.Seal(plain, sealedModel, [alice.Public], ClearanceLevel.Secret, [issuer.Public]);
            File.Delete(plain);
            say($"sealed model                 {Path.GetFileName(sealedModel)}: {pages.Length / PageSize} pages of weights, AES-256-GCM under a random data key");
            say($"sealed to                    alice {alice.Fingerprint.ToShortString()}, needs SECRET from issuer {issuer.Fingerprint.ToShortString()}");

            var now = DateTimeOffset.UtcNow;
            var cases = new (string Who, Identity Identity, Claim Claim, bool ExpectLive)[]
            {
                ("alice, valid SECRET claim", alice, Claim.Issue(issuer, alice.Public, ClearanceLevel.Secret, now.AddHours(-1), now.AddHours(1)), true),
                ("alice, claim expired an hour ago", alice, Claim.Issue(issuer, alice.Public, ClearanceLevel.Secret, now.AddHours(-2), now.AddHours(-1)), false),
                ("mallory, her own valid claim", mallory, Claim.Issue(issuer, mallory.Public, ClearanceLevel.TopSecret, now.AddHours(-1), now.AddHours(1)), false),
            };
            using var engine = PageEngine.Create(new EngineOptions { ReadAheadMaxPages = 1 });
            bool ok = true;
            foreach (var (who, identity, claim, expectLive) in cases)
                ok &= OpenAs(engine, sealedModel, who, identity, claim, expectLive, pages, say, showStates);
            return ok;
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static bool OpenAs(PageEngine engine, string sealedModel, string who, Identity identity, Claim claim, bool expectLive,
        byte[] expected, Action<string> say, Action<Arena, string> showStates)
    {
        say("");
        say($"as {who}:");
        using var model = SealedModel.Open(sealedModel);
        using var decision = model.Decide(identity, claim, DateTimeOffset.UtcNow);
        say($"decision                     {(decision.IsLive ? "LIVE" : "DEAD")} ({decision.Reason}): {decision.Message}");

        using var view = SealedFileView.For(model, decision.IsLive ? decision.Key : null);
        using var file = File.OpenHandle(sealedModel);
        long length = (model.FileLength + PageSize - 1) / PageSize * PageSize;
        using var arena = engine.CreateArena(length, "sealed model");
        // Each page comes from the file when first touched: decrypted when live, zeros when dead.
        arena.AttachSource(new SealedFileSource(view, (int)file.DangerousGetHandle(), 0));

        int pageCount = expected.Length / PageSize, exact = 0, zero = 0;
        var page = new byte[PageSize];
        for (int p = 0; p < pageCount; p++)
        {
            ArenaMemory.Read(arena.Address + (nint)model.DataOffset + p * PageSize, page);
            if (page.AsSpan().SequenceEqual(expected.AsSpan(p * PageSize, PageSize))) exact++;
            if (!page.AsSpan().ContainsAnyExcept((byte)0)) zero++;
        }
        showStates(arena, "pages (head, weights, tail)");
        say($"weights read back            {exact} of {pageCount} pages exact, {zero} all zeros");
        bool pass = expectLive ? decision.IsLive && exact == pageCount : !decision.IsLive && zero == pageCount;
        say(pass
            ? (expectLive ? "PASS: live, every page decrypted to the original bytes" : "PASS: dead material, every page reads as zeros")
            : $"FAIL: expected {(expectLive ? "live, exact pages" : "dead material, zero pages")}");
        return pass;
    }

    /// <summary>A GGUF model whose only tensor is the demo's 64 pages.</summary>
    private static void WriteModel(string path, byte[] pages)
    {
        var writer = new GgufWriter(4096);
        writer.Add("general.architecture", "spaceshuttle");
        writer.Add("general.name", "64 pages of the eagle");
        var tensor = writer.AddTensor("shuttle.weight", GgmlType.I8, [pages.Length]);
        using var output = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        writer.WriteHeader(output);
        writer.WriteTensorData(output, tensor, pages);
    }
}
