using Tibet.Cli;
using Xunit;

namespace Tibet.IntegrationTests.Identities;

/// <summary>The WHEN syntax of --expires, --not-before and --at.</summary>
public class WhenParserTests
{
    private static readonly DateTimeOffset Now = new(2030, 6, 15, 12, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData("now", 0)]
    [InlineData("+30d", 30 * 86400)]
    [InlineData("+12h", 12 * 3600)]
    [InlineData("+45m", 45 * 60)]
    [InlineData("+90s", 90)]
    [InlineData("+2w", 14 * 86400)]
    [InlineData("-1d", -86400)]
    [InlineData("+1d12h", 86400 + 12 * 3600)]
    public void Relative_forms_count_from_now(string text, long seconds)
    {
        Assert.True(WhenParser.TryParse(text, Now, out var when));
        Assert.Equal(Now.AddSeconds(seconds), when);
    }

    [Theory]
    [InlineData("2031-01-31", "2031-01-31T00:00:00Z")]
    [InlineData("2031-01-31T08:30:00Z", "2031-01-31T08:30:00Z")]
    [InlineData("2031-01-31T08:30Z", "2031-01-31T08:30:00Z")]
    [InlineData("2031-01-31T08:30:00+02:00", "2031-01-31T06:30:00Z")]
    [InlineData("2031-01-31T08:30:00.5-01:00", "2031-01-31T09:30:00Z")]
    public void Iso_8601_forms_are_absolute(string text, string utc)
    {
        Assert.True(WhenParser.TryParse(text, Now, out var when));
        Assert.Equal(DateTimeOffset.Parse(utc, System.Globalization.CultureInfo.InvariantCulture).UtcDateTime,
            new DateTime(when.UtcDateTime.Ticks / TimeSpan.TicksPerSecond * TimeSpan.TicksPerSecond, DateTimeKind.Utc));
    }

    [Theory]
    [InlineData("")]
    [InlineData("tomorrow")]
    [InlineData("+")]
    [InlineData("+30")]
    [InlineData("+30y")]
    [InlineData("30d")]
    [InlineData("+d")]
    [InlineData("+1d-2h")]
    [InlineData("2031-01-31T08:30:00")] // no zone: would silently mean local time
    [InlineData("2031-02-30")]
    [InlineData("+9999999999d")]
    public void Everything_else_is_refused(string text) => Assert.False(WhenParser.TryParse(text, Now, out _));
}
