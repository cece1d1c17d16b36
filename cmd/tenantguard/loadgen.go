package main

import "github.com/spf13/cobra"

func newLoadgenCmd(a *app) *cobra.Command {
	return &cobra.Command{Use: "loadgen", Short: "Send synthetic multi-tenant traffic"}
}
