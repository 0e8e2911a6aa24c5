using System.Diagnostics;
using Tibet.Core.Gguf;
using Tibet.Core.Identity;
using Tibet.Core.Sealing;
using Xunit;
using Xunit.Abstractions;

namespace Tibet.IntegrationTests.Sealing;

/// <summary>Seals and unseals a ~100 MB model, reporting throughput and checking that
/// sealing streams (its memory does not grow with the model).</summary>
public sealed class SealingThroughputTests : IDisposable
{
    private const int TensorCount = 25;
    private const int TensorBytes = 4 << 20;

    private readonly SealingWorld _world = new();
    private readonly ITestOutputHelper _output;

    public SealingThroughputTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => _world.Dispose();

    [Fact]
    public void A_100_MB_model_seals_and_unseals_in_bounded_memory()
    {
        string plainPath = _world.PathOf("big.gguf");
        WriteBigModel(plainPath);
        long modelBytes = (long)TensorCount * TensorBytes;
        string sealedPath = _world.PathOf("big.sealed.gguf");

        GC.Collect();
        long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        var clock = Stopwatch.StartNew();
        var result = ModelSealer.Seal(plainPath, sealedPath, [_world.Alice.Public], ClearanceLevel.Secret, [_world.Issuer.Public]);
        double sealSeconds = clock.Elapsed.TotalSeconds;
        long sealAllocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;

        string unsealedPath = _world.PathOf("big.unsealed.gguf");
        clock.Restart();
        using (var model = SealedModel.Open(sealedPath))
        using (var decision = model.Decide(_world.Alice, _world.ClaimFor(_world.Alice), SealingWorld.Now))
        {
            Assert.True(decision.IsLive, decision.ToString());
            ModelUnsealer.Unseal(model, decision.Key, unsealedPath);
        }
        double unsealSeconds = clock.Elapsed.TotalSeconds;

        _output.WriteLine($"seal:   {modelBytes / 1e6:F0} MB in {sealSeconds:F2} s = {modelBytes / 1e6 / sealSeconds:F0} MB/s, {sealAllocated / 1e6:F1} MB allocated");
        _output.WriteLine($"unseal: {modelBytes / 1e6:F0} MB in {unsealSeconds:F2} s = {modelBytes / 1e6 / unsealSeconds:F0} MB/s");
        Assert.Equal(modelBytes, result.DataBytes);
        Assert.True(sealAllocated < 16 << 20, $"sealing {modelBytes} bytes allocated {sealAllocated} bytes: it does not stream");
        Assert.True(FilesEqual(plainPath, unsealedPath), "the unsealed model differs from the original");
    }

    private static void WriteBigModel(string path)
    {
        var writer = new GgufWriter();
        writer.Add("general.architecture", "llama");
        var tensors = Enumerable.Range(0, TensorCount)
            .Select(i => writer.AddTensor($"blk.{i}.ffn_up.weight", GgmlType.F32, TensorBytes / 4 / 1024, 1024))
            .ToList();
        var random = new Random(42);
        var data = new byte[TensorBytes];
        using var output = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        writer.WriteHeader(output);
        foreach (var tensor in tensors)
        {
            random.NextBytes(data);
            writer.WriteTensorData(output, tensor, data);
        }
    }

    private static bool FilesEqual(string first, string second)
    {
        using var a = File.OpenRead(first);
        using var b = File.OpenRead(second);
        if (a.Length != b.Length)
            return false;
        var bufferA = new byte[1 << 20];
        var bufferB = new byte[1 << 20];
        int read;
        while ((read = a.Read(bufferA)) > 0)
        {
            b.ReadExactly(bufferB, 0, read);
            if (!bufferA.AsSpan(0, read).SequenceEqual(bufferB.AsSpan(0, read)))
                return false;
        }
        return true;
    }
}
