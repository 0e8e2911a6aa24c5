namespace Tibet.IntegrationTests.Identities;

/// <summary>Seeded random damage to files: bit flips, byte changes, truncation,
/// insertion, deletion, duplication, appended garbage.</summary>
internal static class Corruptor
{
    public static byte[] Corrupt(byte[] original, Random random)
    {
        var data = new List<byte>(original);
        int rounds = random.Next(8) == 0 ? random.Next(2, 6) : 1;
        for (int round = 0; round < rounds; round++)
        {
            int at = data.Count == 0 ? 0 : random.Next(data.Count);
            switch (random.Next(8))
            {
                case 0 when data.Count > 0:
                    data[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 1 when data.Count > 0:
                    data[at] = (byte)random.Next(256);
                    break;
                case 2:
                    data.RemoveRange(at, data.Count - at);
                    break;
                case 3:
                    data.InsertRange(at, RandomBytes(random, random.Next(1, 9)));
                    break;
                case 4 when data.Count > 0:
                    data.RemoveRange(at, random.Next(1, Math.Min(16, data.Count - at) + 1));
                    break;
                case 5 when data.Count > 0:
                    int length = random.Next(1, Math.Min(32, data.Count - at) + 1);
                    data.InsertRange(random.Next(data.Count + 1), data.GetRange(at, length));
                    break;
                case 6:
                    data.AddRange(RandomBytes(random, random.Next(1, 64)));
                    break;
                default:
                    if (data.Count > 0)
                        data[at] = (byte)(data[at] + 1);
                    break;
            }
        }
        return data.ToArray();
    }

    private static byte[] RandomBytes(Random random, int count)
    {
        var bytes = new byte[count];
        random.NextBytes(bytes);
        return bytes;
    }
}
