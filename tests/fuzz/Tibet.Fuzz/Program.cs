using SharpFuzz;
using Tibet.Fuzz;
using Tibet.Fuzz.Targets;

// Tibet.Fuzz TARGET                  run TARGET under afl-fuzz (scripts/fuzz.sh); outside
//                                    AFL it parses standard input once
// Tibet.Fuzz replay TARGET FILE...   parse each FILE and print the outcome (reproduces a crash)
// Tibet.Fuzz seeds DIR               write the seed corpora DIR/<target>/ with tibet's own writers

string usage = $"usage: Tibet.Fuzz TARGET | replay TARGET FILE... | seeds DIR   (targets: {FuzzTarget.Names})";
if (args.Length == 0)
{
    Console.Error.WriteLine(usage);
    return 2;
}

switch (args[0])
{
    case "seeds" when args.Length == 2:
        SeedCorpus.WriteAll(args[1]);
        return 0;

    case "replay" when args.Length >= 3:
    {
        var target = FindTarget(args[1]);
        if (target is null)
            return 2;
        foreach (string path in args[2..])
        {
            var outcome = target.Run(File.ReadAllBytes(path));
            Console.WriteLine($"{path}: {(outcome.Accepted ? "accepted" : "refused")}: {outcome.Detail}");
        }
        return 0;
    }

    case var name when args.Length == 1 && FindTarget(name) is { } target:
        // Out of process: the fork server survives a crash, a hang or a stack overflow of
        // the parser and restarts the child that runs it.
        Fuzzer.OutOfProcess.Run(stream =>
        {
            using var buffer = new MemoryStream();
            stream.CopyTo(buffer);
            target.Run(buffer.ToArray());
        });
        return 0;

    default:
        Console.Error.WriteLine(usage);
        return 2;
}

static FuzzTarget? FindTarget(string name)
{
    var target = FuzzTarget.Named(name);
    if (target is null)
        Console.Error.WriteLine($"Tibet.Fuzz: no target '{name}'; the targets are {FuzzTarget.Names}.");
    return target;
}
