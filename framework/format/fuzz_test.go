package format

import (
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"maunium.net/go/mautrix/event"
)

// specAttributes is the spec's table of permitted tags and attributes,
// written out again here so that the fuzz check does not trust the table
// Sanitize itself uses. data-mx-emoticon is our one addition (see
// allowedTags).
var specAttributes = map[string][]string{
	"del": nil, "h1": nil, "h2": nil, "h3": nil, "h4": nil, "h5": nil, "h6": nil,
	"blockquote": nil, "p": nil, "ul": nil, "sup": nil, "sub": nil, "li": nil,
	"b": nil, "i": nil, "u": nil, "strong": nil, "em": nil, "s": nil, "hr": nil,
	"br": nil, "table": nil, "thead": nil, "tbody": nil, "tr": nil, "th": nil,
	"td": nil, "caption": nil, "pre": nil, "details": nil, "summary": nil,
	"span": {"data-mx-bg-color", "data-mx-color", "data-mx-spoiler", "data-mx-maths"},
	"a":    {"target", "href"},
	"img":  {"width", "height", "alt", "title", "src", "data-mx-emoticon"},
	"ol":   {"start"},
	"code": {"class"},
	"div":  {"data-mx-maths"},
}

var specVoid = map[string]bool{"br": true, "hr": true, "img": true}

// checkAttribute reports what is wrong with one attribute of the output.
func checkAttribute(tag string, a html.Attribute) string {
	if a.Namespace != "" {
		return "namespaced attribute " + a.Namespace + ":" + a.Key
	}
	found := false
	for _, k := range specAttributes[tag] {
		found = found || k == a.Key
	}
	if !found {
		return "attribute " + a.Key + " on " + tag
	}
	switch a.Key {
	case "href":
		v := strings.ToLower(a.Val)
		for _, scheme := range []string{"https:", "http:", "ftp:", "mailto:", "magnet:", "matrix:"} {
			if strings.HasPrefix(v, scheme) {
				return ""
			}
		}
		return "href " + a.Val
	case "src":
		if !strings.HasPrefix(a.Val, "mxc://") {
			return "src " + a.Val
		}
	case "data-mx-color", "data-mx-bg-color":
		if len(a.Val) != 7 || a.Val[0] != '#' {
			return "colour " + a.Val
		}
	case "class":
		for _, c := range strings.Fields(a.Val) {
			if !strings.HasPrefix(c, "language-") {
				return "class " + c
			}
		}
	}
	return ""
}

// checkTokens tokenises Sanitize's output and reports the first thing that
// is not well-formed, permitted HTML.
func checkTokens(out string) string {
	z := html.NewTokenizer(strings.NewReader(out))
	var stack []string
	for {
		switch z.Next() {
		case html.ErrorToken:
			if len(stack) != 0 {
				return "unclosed " + strings.Join(stack, ",")
			}
			return ""
		case html.StartTagToken:
			tok := z.Token()
			if _, ok := specAttributes[tok.Data]; !ok {
				return "tag " + tok.Data
			}
			for _, a := range tok.Attr {
				if problem := checkAttribute(tok.Data, a); problem != "" {
					return problem
				}
			}
			if !specVoid[tok.Data] {
				stack = append(stack, tok.Data)
				if len(stack) > MaxNesting {
					return "nested too deep"
				}
			} else if len(stack) >= MaxNesting {
				return "void nested too deep"
			}
		case html.EndTagToken:
			tok := z.Token()
			if len(stack) == 0 || stack[len(stack)-1] != tok.Data {
				return "misnested </" + tok.Data + ">"
			}
			stack = stack[:len(stack)-1]
		case html.SelfClosingTagToken:
			return "self-closing tag"
		case html.CommentToken, html.DoctypeToken:
			return "comment or doctype"
		}
	}
}

// checkParsed parses the output the way a browser does and reports any
// element or attribute outside the spec's list.
func checkParsed(out string) string {
	body := &html.Node{Type: html.ElementNode, Data: "body", DataAtom: atom.Body}
	nodes, err := html.ParseFragment(strings.NewReader(out), body)
	if err != nil {
		return "browser parse failed: " + err.Error()
	}
	var walk func(n *html.Node) string
	walk = func(n *html.Node) string {
		switch n.Type {
		case html.ElementNode:
			if n.Namespace != "" {
				return "foreign element " + n.Namespace + ":" + n.Data
			}
			if _, ok := specAttributes[n.Data]; !ok {
				return "element " + n.Data
			}
			for _, a := range n.Attr {
				if problem := checkAttribute(n.Data, a); problem != "" {
					return problem
				}
			}
		case html.CommentNode, html.DoctypeNode:
			return "comment or doctype"
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			if problem := walk(c); problem != "" {
				return problem
			}
		}
		return ""
	}
	for _, n := range nodes {
		if problem := walk(n); problem != "" {
			return problem
		}
	}
	return ""
}

func sanitizeSeeds() []string {
	var seeds []string
	for _, group := range [][]sanitizeCase{xssCases, structureCases} {
		for _, tc := range group {
			seeds = append(seeds, tc.in)
		}
	}
	seeds = append(seeds, allowedCases...)
	return append(seeds,
		strings.Repeat("<div><b>", 80)+"x",
		"<table><td><table><td><li><li><p><h1><h2><a href=https://x><a href=https://y>",
		`<svg><style><img src=x onerror=alert(1)></style></svg>`,
		`<math><annotation-xml encoding="text/html"><script>alert(1)</script>`,
		`<select><template><style><img src=x onerror=alert(1)>`,
		`<a href="https://x"><table><td><a href="https://y">`,
		`<p><button><div>x</div></button></p>`,
		"<pre>\n\nx</pre>",
		`<span data-mx-spoiler=""><span data-mx-spoiler="a&quot;b">x</span></span>`,
	)
}

// FuzzSanitize checks, for any input, that Sanitize does not panic and that
// its output is valid UTF-8, well-formed, permitted by the spec (both as a
// tokenizer and as a browser read it), and unchanged by a second pass.
func FuzzSanitize(f *testing.F) {
	for _, s := range sanitizeSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := Sanitize(in)
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 in %q", out)
		}
		if again := Sanitize(out); again != out {
			t.Fatalf("not idempotent:\n  in %q\n out %q\nagain %q", in, out, again)
		}
		if problem := checkTokens(out); problem != "" {
			t.Fatalf("%s\n  in %q\n out %q", problem, in, out)
		}
		if problem := checkParsed(out); problem != "" {
			t.Fatalf("%s\n  in %q\n out %q", problem, in, out)
		}
	})
}

// FuzzConversions checks that the conversions built on mautrix do not panic
// on any input and never put unsanitised HTML into content.
func FuzzConversions(f *testing.F) {
	for _, s := range sanitizeSeeds() {
		f.Add(s)
	}
	f.Add("# h\n\n> quote\n> > nested\n\n1. a\n2. b\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n||spoiler|| ~~s~~ `c` [l](https://x)")
	f.Fuzz(func(t *testing.T, in string) {
		HTMLToPlain(in)
		HTMLToMarkdown(in)
		contents := map[string]*event.MessageEventContent{
			"MarkdownToContent": MarkdownToContent(in),
			"HTMLContent":       HTMLContent(in, ""),
		}
		for from, c := range contents {
			if Sanitize(c.FormattedBody) != c.FormattedBody {
				t.Fatalf("%s: formatted_body %q is not sanitised", from, c.FormattedBody)
			}
			if !utf8.ValidString(c.Body) {
				t.Fatalf("%s: invalid UTF-8 in body %q", from, c.Body)
			}
		}
	})
}
