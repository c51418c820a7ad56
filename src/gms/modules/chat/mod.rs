//! The ORS chat actions (`www.genesyslab.com/modules/chat`):
//! `<chat:sendchatmessage interactionid from message>` adds a message to
//! the chat's transcript as a system party named `from` (default
//! `System`), answered with `chat.sendchatmessage.done` (`requestid`,
//! `interactionid`, `position`) or `error.chat.sendchatmessage`.

pub mod sendchatmessage;
