"""Protocol framers: Modbus (RTU CRC16 and MBAP), CJ/T 188-2004, DL/T 645-2007. Pure functions, no I/O."""
