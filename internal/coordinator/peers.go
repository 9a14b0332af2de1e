package coordinator

// coordinatorURLs returns the API URLs of every live coordinator of the
// mesh, sorted and without duplicates, for the netmap's Coordinators:
// nodes fail over between them and learn of new ones from each netmap.
// For now the only one known is this coordinator itself; with several
// coordinators on one database it is read from their shared table.
func (c *Coordinator) coordinatorURLs() []string {
	return []string{c.url}
}
