package guardloop

import (
	"os"
	"testing"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv(serviceEnv) != "" {
		os.Exit(runService())
	}
	testenv.Main(m)
}
