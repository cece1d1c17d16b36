// Command readme stands in for the README's Go snippets: the test
// TestReadmeSnippetCompiles (docs/examples/service) builds and vets each
// snippet in place of this file, so every one stays a complete program.
package main

func main() {}
