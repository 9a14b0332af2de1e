package nodestate

import "github.com/agentmesh/agentmesh/internal/durable"

// writeFile writes data to path with mode 0600 atomically: into a
// temporary file in the same directory, synced, then renamed over path
// (replace) or hard-linked to it (no replace: fails if path exists), and
// the directory synced so the new name survives a crash. Readers see the
// old contents or the new, never a mix.
func writeFile(path string, data []byte, replace bool) error {
	return durable.WriteFile(path, data, fileMode, replace)
}
