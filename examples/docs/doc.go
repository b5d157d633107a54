// Package docs holds the code of docs/framework.md that no example program
// has: a sketch of a bridge for a chat network with accounts, long-message
// splitting and a reconnecting client. It is compiled and vetted with the
// rest of the module, and doc_test.go checks that every Go block of the
// page is, verbatim, in a Go file under examples/ — here or in one of the
// example programs — so the page cannot drift from code that builds.
package docs
