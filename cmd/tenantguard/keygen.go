package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/internal/daemon"
	"github.com/tenantguard/tenantguard/limiter"
)

func newKeygenCmd(a *app) *cobra.Command {
	var out, public string
	cmd := &cobra.Command{
		Use:   "keygen -o FILE | --public FILE",
		Short: "Create the Ed25519 key pair that decisions are signed with; print the public key for limiters",
		Long: "keygen -o FILE writes a new Ed25519 private key to FILE (PEM, PKCS #8, mode 0600; it never\n" +
			"overwrites a file) and prints its public key. Point decisions.signing_key_file at FILE for the\n" +
			"daemon and the CLI, and put the public key in every limiter's trusted_keys.\n" +
			"keygen --public FILE prints the public key of an existing private key, e.g. one that\n" +
			"`openssl genpkey -algorithm ed25519 -out FILE` created.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case (out == "") == (public == ""):
				return usageErr(errors.New("give either -o FILE (create a key) or --public FILE (print its public key)"))
			case public != "":
				s, err := limiter.LoadSigner(public)
				if err != nil {
					return usageErr(err)
				}
				fmt.Fprintln(a.stdout, limiter.FormatPublicKey(s.PublicKey()))
				return nil
			}
			pub, err := daemon.WriteSigningKey(out)
			if errors.Is(err, fs.ErrExist) {
				return usageErr(fmt.Errorf("%s exists: keygen never overwrites a key (print its public key with --public %s)", out, out))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "wrote the private key to %s; set decisions.signing_key_file to it.\n"+
				"public key (limiter trusted_keys, decisions.trusted_keys):\n", out)
			fmt.Fprintln(a.stdout, pub)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "write a new private key to this file")
	cmd.Flags().StringVar(&public, "public", "", "print the public key of this private key file")
	return cmd
}
