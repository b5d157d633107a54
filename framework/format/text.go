package format

import (
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// readyForText rewrites sanitised HTML where mautrix's HTML-to-text
// conversion would lose what a reader sees:
//
//   - mautrix deletes line breaks inside text (it expects goldmark's
//     "<br>\n"), which glues "Alert\nfiring" into "Alertfiring"; a browser
//     shows a space there, and so does the text;
//   - mautrix runs the cells of a table together; the spec suggests
//     tab-delimited text as the fallback for tables, so each row becomes a
//     line and its cells are separated by a tab.
//
// The input is Sanitize's output, which nests far less deep than the HTML
// parser's limit; should parsing fail anyway, the input is returned as is.
func readyForText(clean string) string {
	body := &html.Node{Type: html.ElementNode, Data: "body", DataAtom: atom.Body}
	nodes, err := html.ParseFragment(strings.NewReader(clean), body)
	if err != nil {
		return clean
	}
	var b strings.Builder
	for _, n := range nodes {
		adjustForText(n, false)
		if err := html.Render(&b, n); err != nil {
			return clean
		}
	}
	return b.String()
}

func adjustForText(n *html.Node, inPre bool) {
	if n.Type == html.TextNode && !inPre {
		n.Data = joinLines(n.Data)
	}
	if n.DataAtom == atom.Pre {
		inPre = true
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		adjustForText(c, inPre)
	}
	if n.Type == html.ElementNode && n.DataAtom == atom.Table {
		flattenTable(n)
	}
}

// flattenTable turns a table into a div holding its caption and rows,
// separated by <br>, with a tab between the cells of a row. The result has
// to survive mautrix parsing it again, so no table elements may remain
// around the moved content (a div inside a table would be moved out of it).
func flattenTable(table *html.Node) {
	var lines [][]*html.Node // each line: the nodes whose content it shows, a tab between them
	for _, c := range detachChildren(table) {
		switch c.DataAtom {
		case atom.Caption:
			lines = append(lines, []*html.Node{c})
		case atom.Thead, atom.Tbody, atom.Tfoot:
			for _, row := range detachChildren(c) {
				if row.DataAtom == atom.Tr {
					lines = append(lines, cells(row))
				}
			}
		case atom.Tr:
			lines = append(lines, cells(c))
		}
	}
	table.Data, table.DataAtom = "div", atom.Div
	for i, line := range lines {
		if i > 0 {
			table.AppendChild(&html.Node{Type: html.ElementNode, Data: "br", DataAtom: atom.Br})
		}
		for j, cell := range line {
			if j > 0 {
				table.AppendChild(&html.Node{Type: html.TextNode, Data: "\t"})
			}
			for _, c := range detachChildren(cell) {
				table.AppendChild(c)
			}
		}
	}
}

func cells(row *html.Node) []*html.Node {
	var cells []*html.Node
	for _, c := range detachChildren(row) {
		if c.DataAtom == atom.Td || c.DataAtom == atom.Th {
			cells = append(cells, c)
		}
	}
	return cells
}

func detachChildren(n *html.Node) []*html.Node {
	var children []*html.Node
	for c := n.FirstChild; c != nil; {
		next := c.NextSibling
		n.RemoveChild(c)
		children = append(children, c)
		c = next
	}
	return children
}

// joinLines replaces every run of white space that contains a line break
// and has text on both sides with one space. Line breaks at the edges are
// left for mautrix to delete: those are source formatting next to a <br>
// or a block, where a reader sees no space.
func joinLines(t string) string {
	if !strings.Contains(t, "\n") {
		return t
	}
	var b strings.Builder
	for i := 0; i < len(t); {
		if !isSpace(t[i]) {
			b.WriteByte(t[i])
			i++
			continue
		}
		j := i
		for j < len(t) && isSpace(t[j]) {
			j++
		}
		if run := t[i:j]; i > 0 && j < len(t) && strings.Contains(run, "\n") {
			b.WriteByte(' ')
		} else {
			b.WriteString(run)
		}
		i = j
	}
	return b.String()
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
}
