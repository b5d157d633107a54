package docs

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// page is the documentation page whose Go blocks must compile.
const page = "../../docs/framework.md"

// goBlock is a ```go block of a markdown page.
type goBlock struct {
	line int // of the opening fence
	code string
}

// goBlocks returns the ```go blocks of a markdown page. Blocks must start
// at column 0: an indented one (in a list) could not be found verbatim in
// a Go file, so it is reported as an error.
func goBlocks(markdown string) ([]goBlock, []string) {
	var blocks []goBlock
	var problems []string
	var cur *goBlock
	var body []string
	for i, line := range strings.Split(markdown, "\n") {
		switch {
		case cur == nil && line == "```go":
			cur, body = &goBlock{line: i + 1}, nil
		case cur == nil && strings.TrimSpace(line) == "```go":
			problems = append(problems, fmt.Sprintf("line %d: indented ```go block", i+1))
		case cur != nil && line == "```":
			cur.code = strings.Join(body, "\n")
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			body = append(body, line)
		}
	}
	if cur != nil {
		problems = append(problems, fmt.Sprintf("line %d: unclosed ```go block", cur.line))
	}
	return blocks, problems
}

// TestDocBlocksCompile: every Go block of docs/framework.md is, verbatim,
// in a Go file under examples/ (this package, or an example program), so
// the page shows only code that builds, passes go vet and — for the
// example programs — is tested.
func TestDocBlocksCompile(t *testing.T) {
	markdown, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	blocks, problems := goBlocks(string(markdown))
	for _, p := range problems {
		t.Errorf("%s: %s", page, p)
	}
	if len(blocks) < 10 {
		t.Fatalf("%s: found %d Go blocks; the page has more than that", page, len(blocks))
	}
	var sources []string
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		src, err := os.ReadFile(path)
		sources = append(sources, string(src))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if strings.TrimSpace(b.code) == "" {
			t.Errorf("%s:%d: empty Go block", page, b.line)
			continue
		}
		if !slices.ContainsFunc(sources, func(src string) bool { return strings.Contains(src, b.code) }) {
			t.Errorf("%s:%d: this Go block is in no Go file under examples/ (copy it from there, or add it to examples/docs):\n%s",
				page, b.line, b.code)
		}
	}
}

func TestGoBlocks(t *testing.T) {
	blocks, problems := goBlocks("text\n```go\nfunc a() {}\n```\n```sh\nls\n```\n  ```go\nx\n  ```\n```go\n\tb()\n\n```\n```go\nc")
	if len(blocks) != 2 || blocks[0].code != "func a() {}" || blocks[0].line != 2 || blocks[1].code != "\tb()\n" {
		t.Errorf("blocks = %+v", blocks)
	}
	if len(problems) != 2 || !strings.Contains(problems[0], "line 8: indented") || !strings.Contains(problems[1], "line 15: unclosed") {
		t.Errorf("problems = %q", problems)
	}
}

func TestSplitText(t *testing.T) {
	for _, tc := range []struct {
		text string
		max  int
		want []string
	}{
		{"short", 10, []string{"short"}},
		{"one two three four", 8, []string{"one two", "three", "four"}},
		{"abcdefghij", 4, []string{"abcd", "efgh", "ij"}},
		{"ééé", 3, []string{"é", "é", "é"}}, // never inside a character
	} {
		if got := splitText(tc.text, tc.max); !slices.Equal(got, tc.want) {
			t.Errorf("splitText(%q, %d) = %q, want %q", tc.text, tc.max, got, tc.want)
		}
	}
}
