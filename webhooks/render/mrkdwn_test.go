package render

import (
	"strings"
	"testing"
	"time"
)

func TestMrkdwn(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		room     bool
	}{
		// Emphasis, and where Slack does not see any.
		{"*bold* _italic_ ~strike~", "<strong>bold</strong> <em>italic</em> <del>strike</del>", false},
		{"*_bold italic_*", "<strong><em>bold italic</em></strong>", false},
		{"(*bold*), _it_.", "(<strong>bold</strong>), <em>it</em>.", false},
		{"snake_case_name and 2*3*4", "snake_case_name and 2*3*4", false},
		{"* not bold *", "* not bold *", false},
		{"*unclosed and _half", "*unclosed and _half", false},
		{"**", "**", false},
		{"*a\nb*", "*a<br>b*", false},
		{"*a _b* c_", "<strong>a _b</strong> c_", false},
		{"*<https://x.org|link>*", `<strong><a href="https://x.org">link</a></strong>`, false},
		// Code keeps its text.
		{"`*not bold* &lt;b&gt;`", "<code>*not bold* &lt;b&gt;</code>", false},
		{"```\nline 1\n  *line 2*\n```", "<pre><code>line 1\n  *line 2*</code></pre>", false},
		{"before ```inline``` after", "before <pre><code>inline</code></pre> after", false},
		{"```unclosed", "```unclosed", false},
		{"``", "``", false},
		{"```<https://x.org|x> <!here>```", "<pre><code>x @here</code></pre>", false},
		// Quotes.
		{"> quoted\n&gt; also\nnot", "<blockquote>quoted<br>also</blockquote>not", false},
		{"a\n>>> all\nof this", "a<blockquote>all<br>of this</blockquote>", false},
		{"a\n\nb", "a<br><br>b", false},
		// Sequences.
		{"<https://x.org/?a=1&amp;b=2>", `<a href="https://x.org/?a=1&amp;b=2">https://x.org/?a=1&amp;b=2</a>`, false},
		{"<mailto:a@b.org|mail me>", `<a href="mailto:a@b.org">mail me</a>`, false},
		{"<javascript:alert(1)|x>", "x", false},
		{"<b>not a tag</b>", "&lt;b&gt;not a tag&lt;/b&gt;", false},
		{"<@U123> <@U123|bob> <#C1|ops> <#C1>", "@U123 @bob #ops #C1", false},
		{"<!subteam^S1|@oncall> <!subteam^S1>", "@oncall @S1", false},
		{"<!here> <!channel|channel> <!everyone>", "@room @room @room", true},
		{"<!date^1392734382^{date_num} {time_secs}|Feb 18, 2014>", "Feb 18, 2014", false},
		{"<!date^1392734382^{date_num} {time_secs}>", "2014-02-18 14:39:42 UTC", false},
		{"<!date^1392734382^{date_long}^https://x.org>", "Tuesday, February 18th, 2014", false},
		{"a < b > c", "a &lt; b &gt; c", false},
		{"<<<<>", "&lt;&lt;&lt;&lt;&gt;", false},
		// Escapes and emoji.
		{"&amp;lt; &amp; &lt;&gt; &quot;", "&amp;lt; &amp; &lt;&gt; &amp;quot;", false},
		{":fire: :thumbsup::skin-tone-5: :not_an_emoji: :+1:", "🔥 👍🏾 :not_an_emoji: 👍\ufe0f", false},
		{"at 10:30:00", "at 10:30:00", false},
		{"*:fire:*", "<strong>🔥</strong>", false},
	} {
		r := &slackRenderer{}
		if got := r.mrkdwn(tc.in, true); got != tc.want {
			t.Errorf("mrkdwn(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
		if r.roomMention != tc.room {
			t.Errorf("mrkdwn(%q): room mention %t", tc.in, r.roomMention)
		}
	}
}

func TestMrkdwnOff(t *testing.T) {
	r := &slackRenderer{}
	got := r.mrkdwn("*a* `b` > c\n<https://x.org|d> :fire:", false)
	want := `*a* ` + "`b`" + ` &gt; c<br><a href="https://x.org">d</a> 🔥`
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// TestMrkdwnLinear checks that input built to defeat a naive parser (each
// opener searching the rest of the line) is still converted quickly.
func TestMrkdwnLinear(t *testing.T) {
	for _, s := range []string{
		strings.Repeat("*a ", 20000),
		strings.Repeat("<", 60000),
		strings.Repeat("`", 60000),
		strings.Repeat(":a", 30000),
		strings.Repeat("_*~", 20000),
	} {
		start := time.Now()
		(&slackRenderer{}).mrkdwn(s, true)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%.10q…: %v", s, d)
		}
	}
}

func TestFormatSlackDate(t *testing.T) {
	got := formatSlackDate(1720710212, "{date_num} {date} {date_short} {date_long} {time} {time_secs} {ago} {unknown}")
	want := "2024-07-11 July 11th, 2024 Jul 11, 2024 Thursday, July 11th, 2024 15:03 UTC 15:03:32 UTC 2024-07-11 15:03 UTC {unknown}"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
