package main

import "github.com/spf13/cobra"

func newDevCmd(a *app) *cobra.Command {
	return &cobra.Command{Use: "dev", Short: "Run the whole stack on this machine (see --demo)"}
}
