package main

import (
	"fmt"
	"os"
	"os/signal"

	"github.com/tenantguard/tenantguard/internal/chserver"
)

func main() {
	s, err := chserver.Start("/tmp/chscratch", 19000, 18123)
	if err != nil {
		panic(err)
	}
	fmt.Println("up", s.Addr)
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt)
	<-c
}
