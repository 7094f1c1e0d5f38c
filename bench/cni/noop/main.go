// Command noop is a CNI plugin that does nothing: the floor of what exec'ing a plugin
// through cnitool costs. It answers VERSION, prints a minimal valid result (no interfaces,
// no addresses) for ADD in the configuration's cniVersion, and succeeds on everything else
// (DEL, CHECK, GC, STATUS). It uses the standard library only, no CNI skel, so it measures
// exec and cnitool, not a library's start-up.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

const supported = `["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]`

func main() {
	switch os.Getenv("CNI_COMMAND") {
	case "VERSION":
		fmt.Printf(`{"cniVersion":"1.1.0","supportedVersions":%s}`+"\n", supported)
	case "ADD":
		var conf struct {
			CNIVersion string `json:"cniVersion"`
		}
		b, err := io.ReadAll(os.Stdin)
		if err == nil {
			err = json.Unmarshal(b, &conf)
		}
		if err != nil || conf.CNIVersion == "" {
			fmt.Printf(`{"cniVersion":"1.1.0","code":6,"msg":"noop: cannot decode the network configuration"}` + "\n")
			os.Exit(1)
		}
		out, _ := json.Marshal(map[string]any{"cniVersion": conf.CNIVersion, "ips": []any{}})
		fmt.Println(string(out))
	default:
		// DEL, CHECK, GC, STATUS: nothing to do.
	}
}
