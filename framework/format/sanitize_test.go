package format

import (
	"strings"
	"testing"
	"time"
)

// sanitizeCase is one input and the exact formatted_body Sanitize must make of it.
type sanitizeCase struct {
	name, in, want string
}

// xssCases are attempts to get script, event handlers, foreign URLs or
// unlisted markup past Sanitize.
var xssCases = []sanitizeCase{
	{"img onerror, foreign src", `<img src=x onerror=alert(1)>`, ``},
	{"img onerror, mxc src", `<img src="mxc://example.org/abc" onerror="alert(1)" alt="cat">`, `<img src="mxc://example.org/abc" alt="cat">`},
	{"img from the web becomes its alt text", `<img src="https://evil.example/x.png" alt="a cat">`, `a cat`},
	{"img javascript src", `<img src="javascript:alert(1)" alt="x">`, `x`},
	{"img mxc with path tricks", `<img src="mxc://example.org/../../etc/passwd">`, ``},
	{"a javascript", `<a href="javascript:alert(1)">click</a>`, `click`},
	{"a javascript mixed case", `<a href="JaVaScRiPt:alert(1)">click</a>`, `click`},
	{"a javascript hex entity", `<a href="jav&#x61;script:alert(1)">click</a>`, `click`},
	{"a javascript decimal entities", `<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">click</a>`, `click`},
	{"a javascript named colon entity", `<a href="javascript&colon;alert(1)">click</a>`, `click`},
	{"a javascript with tab entity", `<a href="jav&#x09;ascript:alert(1)">click</a>`, `click`},
	{"a javascript with raw newline", "<a href=\"java\nscript:alert(1)\">click</a>", `click`},
	{"a javascript leading space and control", "<a href=\" \x01javascript:alert(1)\">click</a>", `click`},
	{"a vbscript", `<a href="vbscript:msgbox(1)">click</a>`, `click`},
	{"a data", `<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">click</a>`, `click`},
	{"a relative", `<a href="/_matrix/client/v3/logout">click</a>`, `click`},
	{"a protocol-relative", `<a href="//evil.example/">click</a>`, `click`},
	{"a without href", `<a name="x">click</a>`, `click`},
	{"a event handler and style", `<a href="https://example.com" onclick="alert(1)" style="position:fixed">x</a>`, `<a href="https://example.com">x</a>`},
	{"a first href wins", `<a href="javascript:alert(1)" href="https://example.com">x</a>`, `x`},
	{"svg onload", `<svg onload=alert(1)>`, ``},
	{"svg script", `<svg><script>alert(1)</script></svg>`, ``},
	{"svg link", `<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>`, `x`},
	{"math mxss", `<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>`, `<table></table>`},
	{"iframe", `<iframe src="javascript:alert(1)"></iframe>`, ``},
	{"iframe content", `<iframe>text<script>alert(1)</script></iframe>after`, `after`},
	{"object fallback kept", `<object data="javascript:alert(1)">fallback</object>`, `fallback`},
	{"embed", `<embed src=javascript:alert(1)>`, ``},
	{"form", `<form action="javascript:alert(1)"><input type=submit value=go><button>b</button></form>`, `b`},
	{"script", `<b>bold</b><script>alert(1)</script> tail`, `<b>bold</b> tail`},
	{"script self-closing still swallows", `<script/>alert(1)</script>after`, `after`},
	{"script split by script", `<scr<script>ipt>alert(1)</script>`, `ipt&gt;alert(1)`},
	{"double less-than", `<<script>script>alert(1)</script>`, `&lt;`},
	{"style", `<style>body { display: none }</style>hi`, `hi`},
	{"style attribute", `<div style="background:url(javascript:alert(1))">x</div>`, `<div>x</div>`},
	{"noscript", `<noscript><p title="</noscript><img src=x onerror=alert(1)>">`, `"&gt;`},
	{"template", `<template><b>hidden</b></template>shown`, `shown`},
	{"title", `<title>t</title>body`, `body`},
	{"mx-reply stripped with content", `<mx-reply><blockquote>quoted <a href="https://matrix.to/#/@a:b">a</a></blockquote></mx-reply>reply`, `reply`},
	{"script in attribute value", `<img src="mxc://example.org/abc" title='"><script>alert(1)</script>'>`, `<img src="mxc://example.org/abc" title="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;">`},
	{"tag in alt text", `<img src="mxc://example.org/abc" alt="<script>alert(1)</script>">`, `<img src="mxc://example.org/abc" alt="&lt;script&gt;alert(1)&lt;/script&gt;">`},
	{"quote breakout in colour", `<span data-mx-color="#ff0000&quot; onmouseover=&quot;alert(1)">t</span>`, `<span>t</span>`},
	{"handlers on spans", `<span data-mx-color="red" data-mx-bg-color="#00ff00" onmouseover="x">t</span>`, `<span data-mx-bg-color="#00ff00">t</span>`},
	{"escaped markup stays text", `&lt;script&gt;alert(1)&lt;/script&gt;`, `&lt;script&gt;alert(1)&lt;/script&gt;`},
	{"textarea content is text", `<textarea><script>alert(1)</script></textarea>`, `&lt;script&gt;alert(1)&lt;/script&gt;`},
	{"comment", `<!-- <script>alert(1)</script> -->ok`, `ok`},
	{"cdata is a bogus comment in html", `<![CDATA[<script>alert(1)</script>]]>`, `alert(1)]]&gt;`},
	{"doctype and document", `<!DOCTYPE html><html><head><meta charset="utf-8"><link rel=stylesheet href=x></head><body><p>hi</p></body></html>`, `<p>hi</p>`},
	{"base and meta refresh", `<base href="https://evil.example/"><meta http-equiv="refresh" content="0;url=javascript:alert(1)">x`, `x`},
	{"code class injection", `<code class="language-go&quot; onclick=&quot;x">c</code>`, `<code>c</code>`},
	{"unknown attributes on allowed tags", `<p id="x" class="y" dir="rtl" lang="en" data-foo="z">p</p>`, `<p>p</p>`},
	{"nul bytes", "a\x00b<b\x00>c</b>", `abc`},
	{"invalid utf-8", "a\xffb", "a\uFFFDb"},
}

// structureCases check unknown tags, deprecated tags, implicit closing and
// unclosed tags.
var structureCases = []sanitizeCase{
	{"unknown tags unwrapped", `<section><custom-tag>text</custom-tag> <marquee>more</marquee></section>`, `text more`},
	{"unclosed tags closed", `<p>unclosed <b>bold <i>both`, `<p>unclosed <b>bold <i>both</i></b></p>`},
	{"misnested end tag closes inner", `<b>x<i>y</b>z</i>`, `<b>x<i>y</i></b>z`},
	{"stray end tags", `</b>stray</p></div>`, `stray`},
	{"end tag for wrong element", `<b>x</i>y</b>`, `<b>xy</b>`},
	{"p closed by p", `<p>a<p>b`, `<p>a</p><p>b</p>`},
	{"p closed by block", `<p>a<div>b</div>`, `<p>a</p><div>b</div>`},
	{"p closed by unknown block", `<p>a<section>b</section>`, `<p>a</p>b`},
	{"p not closed from inside a cell", `<p>x<table><tr><td><p>in</table>after`, `<p>x</p><table><tr><td><p>in</p></td></tr></table>after`},
	{"li closes li", `<ul><li>a<li>b<ul><li>c</ul></ul>`, `<ul><li>a</li><li>b<ul><li>c</li></ul></li></ul>`},
	{"li not closed across div", `<ul><li><div>a<li>b</ul>`, `<ul><li><div>a</div></li><li>b</li></ul>`},
	{"cells and rows", `<table><tr><td>a<td>b<tr><th>c</table>`, `<table><tr><td>a</td><td>b</td></tr><tr><th>c</th></tr></table>`},
	{"table sections", `<table><thead><tr><th>h<tbody><tr><td>d</table>`, `<table><thead><tr><th>h</th></tr></thead><tbody><tr><td>d</td></tr></tbody></table>`},
	{"end tag does not leave a cell", `<b><table><tr><td></b>x</td></tr></table>y</b>`, `<b><table><tr><td>x</td></tr></table>y</b>`},
	{"links do not nest", `<a href="https://a.example">1<a href="https://b.example">2</a>`, `<a href="https://a.example">1</a><a href="https://b.example">2</a>`},
	{"heading closed by heading", `<h1>a<h2>b`, `<h1>a</h1><h2>b</h2>`},
	{"heading end tag of other level", `<h1>a</h2>b`, `<h1>a</h1>b`},
	{"br end tag", `a</br>b`, `a<br>b`},
	{"self-closing void", `a<br/>b<hr/>`, `a<br>b<hr>`},
	{"self-closing non-void opens", `<b/>x`, `<b>x</b>`},
	{"font becomes span", `<font color="#ff0000" data-mx-bg-color="#000000" face="Comic Sans">red</font>`, `<span data-mx-color="#ff0000" data-mx-bg-color="#000000">red</span>`},
	{"font data-mx-color wins over color", `<font data-mx-color="#00ff00" color="#ff0000">g</font>`, `<span data-mx-color="#00ff00">g</span>`},
	{"font named colour dropped", `<font color="red">r</font>`, `<span>r</span>`},
	{"strike becomes del", `<strike>x</strike>`, `<del>x</del>`},
	{"tt becomes code", `<tt>x</tt>`, `<code>x</code>`},
	{"ol start normalised", `<ol start=" 07"><li>x</li></ol>`, `<ol start="7"><li>x</li></ol>`},
	{"ol start not a number", `<ol start="x"><li>x</li></ol>`, `<ol><li>x</li></ol>`},
	{"code keeps language classes only", `<code class="hljs language-go language-c++ x">c</code>`, `<code class="language-go language-c++">c</code>`},
	{"code without language", `<code class="language-">c</code>`, `<code>c</code>`},
	{"img sizes", `<img src="mxc://example.org/abc" width="999999" height="32px">`, `<img src="mxc://example.org/abc">`},
	{"img custom emoji", `<img data-mx-emoticon="yes" src="mxc://example.org/abc" alt=":cat:" height="32">`, `<img data-mx-emoticon src="mxc://example.org/abc" alt=":cat:" height="32">`},
	{"href trimmed", "<a href=\"  https://example.com/\n\">x</a>", `<a href="https://example.com/">x</a>`},
	{"uppercase tags and attributes", `<B>x</B><A HREF="HTTPS://EXAMPLE.COM">y</A>`, `<b>x</b><a href="HTTPS://EXAMPLE.COM">y</a>`},
	{"text escaping", `He said "hi" & 'bye' > <`, `He said "hi" &amp; 'bye' &gt; &lt;`},
	{"entities decoded and re-escaped", `&amp;lt; &copy; &nbsp;&#x1F600;`, "&amp;lt; \u00a9 \u00a0\U0001F600"},
	{"raw carriage returns are line feeds", "a\r\nb\rc", "a\nb\nc"},
	{"carriage return reference kept", `a&#13;b<img src="mxc://example.org/abc" alt="x&#xD;y">`, `a&#13;b<img src="mxc://example.org/abc" alt="x&#13;y">`},
	{"empty", ``, ``},
}

// allowedCases are spec-conforming formatted bodies; Sanitize must return
// each of them unchanged.
var allowedCases = []string{
	`<del>deleted</del> <s>struck</s>`,
	`<h1>1</h1><h2>2</h2><h3>3</h3><h4>4</h4><h5>5</h5><h6>6</h6>`,
	`<blockquote><p>quoted</p></blockquote>`,
	`<p>paragraph</p>`,
	`<a href="https://example.com/path?q=1&amp;r=2#frag" target="_blank">https</a>`,
	`<a href="http://example.com">http</a>`,
	`<a href="ftp://ftp.example.com/file">ftp</a>`,
	`<a href="mailto:alice@example.com">mail</a>`,
	`<a href="magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a">magnet</a>`,
	`<a href="matrix:u/alice:example.org?action=chat">matrix</a>`,
	`<a href="https://matrix.to/#/@alice:example.org">Alice</a>`,
	`<ul><li>one</li><li>two</li></ul>`,
	`<ol start="3"><li>three</li><li>four</li></ol>`,
	`<ol start="-1"><li>minus one</li></ol>`,
	`x<sup>2</sup> H<sub>2</sub>O`,
	`<b>b</b><i>i</i><u>u</u><strong>strong</strong><em>em</em>`,
	`<code>inline</code>`,
	`<pre><code class="language-go">func main() {
	fmt.Println("hi")
}
</code></pre>`,
	`<pre>
leading newline</pre>`,
	`above<hr>below<br>next`,
	`<div>block</div>`,
	`<div data-mx-maths="\frac{a}{b}">a/b</div>`,
	`<table><caption>cap</caption><thead><tr><th>h1</th><th>h2</th></tr></thead><tbody><tr><td>d1</td><td>d2</td></tr></tbody></table>`,
	`<span>plain span</span>`,
	`<span data-mx-color="#ff0000" data-mx-bg-color="#00FF00">colour</span>`,
	`Alice <span data-mx-spoiler>lived happily ever after</span> in the movie.`,
	`<span data-mx-spoiler="health of alice">lived</span>`,
	`This is an equation:
      <span data-mx-maths="\sin(x)=\frac{a}{b}">
        sin(<i>x</i>)=<sup><i>a</i></sup>/<sub><i>b</i></sub>
      </span>`,
	`<img src="mxc://example.org/abc123" width="32" height="32" alt="alt" title="title">`,
	`<details><summary>summary</summary>details</details>`,
	`this is a <s>cat</s> picture :3`,
}

func TestSanitize(t *testing.T) {
	for _, group := range [][]sanitizeCase{xssCases, structureCases} {
		for _, tc := range group {
			t.Run(tc.name, func(t *testing.T) {
				got := Sanitize(tc.in)
				if got != tc.want {
					t.Errorf("Sanitize(%q)\n got %q\nwant %q", tc.in, got, tc.want)
				}
				if again := Sanitize(got); again != got {
					t.Errorf("not idempotent: Sanitize(%q) = %q", got, again)
				}
			})
		}
	}
}

func TestSanitizeKeepsAllowedMarkup(t *testing.T) {
	for _, in := range allowedCases {
		if got := Sanitize(in); got != in {
			t.Errorf("Sanitize changed allowed markup\n  in %q\n got %q", in, got)
		}
	}
}

func TestSanitizeNesting(t *testing.T) {
	deep := func(open string, n int, inner string) string {
		return strings.Repeat(open, n) + inner
	}
	closed := func(tag string, n int, inner string) string {
		return strings.Repeat("<"+tag+">", n) + inner + strings.Repeat("</"+tag+">", n)
	}
	tests := []sanitizeCase{
		{"at the limit", deep("<b>", MaxNesting, "x"), closed("b", MaxNesting, "x")},
		{"beyond the limit", deep("<b>", MaxNesting+50, "x"), closed("b", MaxNesting, "x")},
		{"far beyond the limit", deep("<div>", 100000, "x"), closed("div", MaxNesting, "x")},
		{"void at the limit", deep("<i>", MaxNesting-1, "<br>"), closed("i", MaxNesting-1, "<br>")},
		{"void beyond the limit", deep("<i>", MaxNesting, "a<br>b"), closed("i", MaxNesting, "ab")},
		{"image beyond the limit keeps alt", deep("<i>", MaxNesting, `<img src="mxc://example.org/abc" alt="pic">`), closed("i", MaxNesting, "pic")},
		{"unknown tags do not count", deep("<x>", 500, "<b>y</b>"), `<b>y</b>`},
		{"deep closes come back", deep("<b>", 150, "x") + strings.Repeat("</b>", 150) + "<i>y</i>", closed("b", MaxNesting, "x") + "<i>y</i>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Sanitize(tc.in)
			if got != tc.want {
				t.Errorf("Sanitize(%.60q...)\n got %.300q\nwant %.300q", tc.in, got, tc.want)
			}
		})
	}
}

// TestSanitizeLinearTime feeds inputs that make a naive stack walk
// quadratic. Each is about 1 MB; quadratic handling takes minutes, linear
// handling well under a second, so the bound is loose on purpose.
func TestSanitizeLinearTime(t *testing.T) {
	const n = 100000
	inputs := map[string]string{
		"unmatched end tags":       strings.Repeat("<x>", n) + strings.Repeat("</y>", n),
		"end tags blocked by cell": "<b><table><tr><td>" + strings.Repeat("<x>", n) + strings.Repeat("</b>", n),
		"list items over inline":   "<ul>" + strings.Repeat("<span>", n) + strings.Repeat("<li></li>", n),
		"paragraphs over inline":   strings.Repeat("<i>", n) + strings.Repeat("<p>", n),
		"deep divs":                strings.Repeat("<div>", 2*n),
	}
	for name, in := range inputs {
		start := time.Now()
		Sanitize(in)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: Sanitize took %v on %d bytes", name, d, len(in))
		}
	}
}

func BenchmarkSanitize(b *testing.B) {
	msg := `<p>Alert <b>firing</b> for <a href="https://grafana.example.com/d/abc">dashboard</a></p>` +
		`<table><tr><th>host</th><th>value</th></tr><tr><td>db1</td><td><font color="#ff0000">97%</font></td></tr></table>` +
		`<script>track()</script><img src="https://example.com/pixel.gif" alt="">`
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		Sanitize(msg)
	}
}
