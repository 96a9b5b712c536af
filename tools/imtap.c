/* imtap.c - placeholder replaced by the channel tap. */
int main(void) { return 0; }
