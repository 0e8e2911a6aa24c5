namespace Tibet.Core.Gguf;

/// <summary>One key/value pair of a GGUF file's metadata, in file order.</summary>
public readonly record struct GgufMetadataEntry(string Key, GgufValue Value);
