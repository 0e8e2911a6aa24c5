namespace Tibet.Core.Sealing;

/// <summary>What <see cref="ModelSealer.Seal"/> wrote.</summary>
/// <param name="FileIdHex">tibet.seal.file_id of the new sealed file.</param>
/// <param name="DataPages">Encrypted pages in its data section.</param>
/// <param name="DataBytes">The model's tensor bytes that were sealed (the data section before page padding).</param>
/// <param name="OutputLength">The sealed file's length.</param>
public sealed record SealResult(string FileIdHex, long DataPages, long DataBytes, long OutputLength);
